// ali-oss's multipartUpload against the local object store (tests/it/oss_multipart.rs): the
// upload is cancelled after `cancel_after` parts, then resumed from the checkpoint ali-oss
// handed to its progress callback. Prints one JSON object: the part numbers each run sent, the
// answers' status and ETag. argv[2]: JSON {endpoint, bucket, ak, secret, region, v4, key,
// file, part_size, cancel_after}.
const OSS = require('ali-oss');

async function main() {
  const a = JSON.parse(process.argv[2]);
  const client = new OSS({
    endpoint: a.endpoint,
    bucket: a.bucket,
    accessKeyId: a.ak,
    accessKeySecret: a.secret,
    region: a.region,
    authorizationV4: a.v4,
    // Path-style (`/<bucket>/<key>`) on an IP endpoint.
    sldEnable: true,
    secure: false,
  });
  const sent = [];
  const original = client._uploadPart.bind(client);
  client._uploadPart = (name, uploadId, partNo, data, options) => {
    sent.push(partNo);
    return original(name, uploadId, partNo, data, options);
  };
  let checkpoint = null;
  const out = {};
  try {
    await client.multipartUpload(a.key, a.file, {
      partSize: a.part_size,
      parallel: 1,
      mime: 'video/mp4',
      progress: (p, cpt) => {
        checkpoint = cpt;
        if (cpt && cpt.doneParts.length >= a.cancel_after) {
          client.cancel();
        }
      },
    });
    out.first_completed = true;
  } catch (e) {
    out.first_completed = false;
    out.first_error = e.name;
  }
  out.first_parts = [...sent].sort((x, y) => x - y);
  out.checkpoint_parts = checkpoint ? checkpoint.doneParts.length : 0;
  sent.length = 0;
  const r = await client.multipartUpload(a.key, a.file, {
    partSize: a.part_size,
    parallel: 2,
    checkpoint: JSON.parse(JSON.stringify(checkpoint)),
  });
  out.second_parts = [...sent].sort((x, y) => x - y);
  out.status = r.res.status;
  out.etag = r.etag;
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
