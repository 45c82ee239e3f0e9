-- POST /v1/snapshot-jobs with the README's example body and the bearer token $TOKEN.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
wrk.body = [[{"input":{"location":"oss-cn-shanghai","bucket":"media","object":"uploads/clip 01.mp4"},"output":{"location":"oss-cn-shanghai","bucket":"media","object":"thumbs/clip01/{Count}.jpg"},"time_ms":2000,"interval_s":2,"num":3,"width":640,"frame_type":"normal","sprite":{"output":{"location":"oss-cn-shanghai","bucket":"media","object":"sprites/{TileCount}.jpg"},"lines":10,"columns":10},"pipeline_id":"9bad3801a2c561c22c4df9c6abcd0000","user_data":"bench"}]]
