//! Test media made by ffmpeg in the tests themselves (lavfi sources, nothing downloaded), and
//! ffmpeg/ffprobe used as the independent judge of what the local engine wrote. Tests that need
//! ffmpeg FAIL with a clear message when it is missing (CI installs Debian's `ffmpeg`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn require_ffmpeg() {
    for bin in ["ffmpeg", "ffprobe"] {
        let ok = Command::new(bin)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "`{bin}` is required for the local-engine tests and is not on the PATH: install Debian's ffmpeg package (apt-get install -y ffmpeg)"
        );
    }
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn has_drawtext() -> bool {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-filters"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .any(|l| l.split_whitespace().nth(1) == Some("drawtext"))
}

/// A video made once and cached under `target/engine-fixtures` (keyed by its recipe), written
/// to a temporary name and renamed, so parallel tests and test processes share it safely.
fn cached(name: &str, args: &[String]) -> PathBuf {
    require_ffmpeg();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/engine-fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let recipe = args.join(" ");
    let tag = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        recipe.hash(&mut h);
        format!("{:016x}", h.finish())
    };
    let path = dir.join(format!("{name}-{tag}.mp4"));
    if path.exists() {
        return path;
    }
    // Unique per process *and* thread: `cargo test` runs a binary's tests as threads of one
    // process, and two of them may make the same fixture at once.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{name}-{tag}.tmp{}-{seq}.mp4", std::process::id()));
    run(Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .arg(&tmp));
    // rename is atomic: whichever writer comes last replaces an identical file.
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn h264(gop: u32) -> Vec<String> {
    [
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        &gop.to_string(),
        "-keyint_min",
        &gop.to_string(),
        "-sc_threshold",
        "0",
        "-pix_fmt",
        "yuv420p",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// 30 s, 1280x720, 25 fps, a keyframe every 2 s, `testsrc` with its timestamp burnt in when
/// `drawtext` is available.
pub fn test_video() -> PathBuf {
    let mut src = "testsrc=size=1280x720:rate=25:duration=30".to_string();
    if has_drawtext() {
        src.push_str(
            ",drawtext=text='%{pts\\:hms}':x=40:y=600:fontsize=80:fontcolor=white:box=1:boxcolor=black",
        );
    }
    let mut args: Vec<String> = vec!["-f".into(), "lavfi".into(), "-i".into(), src];
    args.extend(h264(50));
    cached("testsrc-30s-720p", &args)
}

/// 5 s, 320x180: 1 s of black, then `testsrc`.
pub fn black_lead_in_video() -> PathBuf {
    let graph = "color=c=black:s=320x180:r=25:d=1[b];testsrc=size=320x180:rate=25:duration=4[t];[b][t]concat=n=2:v=1";
    let mut args: Vec<String> = vec!["-f".into(), "lavfi".into(), "-i".into(), graph.into()];
    args.extend(h264(25));
    cached("black-lead-in-5s", &args)
}

/// A short small clip (for the SDK runs).
pub fn small_video() -> PathBuf {
    let mut args: Vec<String> = vec![
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        "testsrc=size=320x180:rate=25:duration=6".into(),
    ];
    args.extend(h264(25));
    cached("testsrc-6s-180p", &args)
}

/// A real video of about 206 MB (18 s, 1280x720, 25 fps, H.264 at a fixed low quantizer over
/// noisy `testsrc`, so it does not compress away): big enough for a multipart upload of some
/// 25 parts of 8 MiB, read and snapshotted by ffmpeg like any camera file. Made once (some
/// 10 s), cached under `target/engine-fixtures`.
pub fn large_video() -> PathBuf {
    let mut args: Vec<String> = vec![
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        "testsrc=size=1280x720:rate=25:duration=18,noise=alls=40:allf=t+u".into(),
        "-qp".into(),
        "12".into(),
    ];
    args.extend(h264(50));
    cached("noisy-18s-720p", &args)
}

/// `(width, height)` of an image or video.
pub fn dimensions(path: &Path) -> (u32, u32) {
    let out = run(Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height,codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(path));
    let text = String::from_utf8_lossy(&out);
    let mut it = text.trim().split(',');
    let codec = it.next().unwrap().to_string();
    assert_eq!(codec, "mjpeg", "{} is not a JPEG", path.display());
    (
        it.next().unwrap().parse().unwrap(),
        it.next().unwrap().parse().unwrap(),
    )
}

/// An image decoded to 8-bit grey, optionally cropped to `(x, y, w, h)`.
pub fn gray_image(path: &Path, crop: Option<(u32, u32, u32, u32)>) -> Vec<u8> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-loglevel", "error", "-i"])
        .arg(path);
    if let Some((x, y, w, h)) = crop {
        cmd.args(["-vf", &format!("crop={w}:{h}:{x}:{y}")]);
    }
    cmd.args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"]);
    run(&mut cmd)
}

/// One pixel region as RGB bytes.
pub fn rgb_region(path: &Path, (x, y, w, h): (u32, u32, u32, u32)) -> Vec<u8> {
    run(Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-i"])
        .arg(path)
        .args([
            "-vf",
            &format!("crop={w}:{h}:{x}:{y}"),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ]))
}

/// ffmpeg's own frame of `video` at `time_ms` (the first frame at or after it, found by decoding
/// from the start with `select`, not by seeking as the engine does), scaled, in grey.
pub fn reference_frame(video: &Path, time_ms: u64, size: (u32, u32)) -> Vec<u8> {
    let t = time_ms as f64 / 1000.0;
    run(Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-i"])
        .arg(video)
        .args([
            "-vf",
            &format!("select='gte(t\\,{t:.3})',scale={}:{}", size.0, size.1),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "-",
        ]))
}

/// Mean absolute difference of two grey images of one size.
pub fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "images of different sizes");
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.len() as f64
}

pub fn mean(a: &[u8]) -> f64 {
    a.iter().map(|&x| f64::from(x)).sum::<f64>() / a.len() as f64
}
