// Opens snapgate's /upload page (built on <snapgate-uploader> and <snapgate-storyboard>) in
// Debian's headless chromium (playwright-core, no browser download) and drives the uploader:
// a good video (progress, success, thumbnails, storyboard preview on hover, screenshot), then a
// non-video (must start clean, then fail with MPS's code), then the good video again (must start
// clean: no images of the first upload, no old error). The file chooser is reached with Tab.
// Usage: node upload.mjs BASE_URL VIDEO BAD_FILE SCREENSHOT. Prints one JSON line with what it saw.
import { chromium } from "playwright-core";

const [base, video, bad, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const seen = {};
// What the uploader's shadow DOM shows now.
const view = () => {
  const r = document.querySelector("snapgate-uploader").shadowRoot;
  const q = (p) => r.querySelector(`[part=${p}]`);
  return {
    status: q("status").textContent,
    statusRole: q("status").getAttribute("role"),
    statusLive: q("status").getAttribute("aria-live"),
    error: q("error").textContent,
    progress: q("progress").value,
    images: r.querySelectorAll("img").length,
    videos: r.querySelectorAll("video").length,
  };
};
const eventCount = (page, name) => page.evaluate((n) => window.__events.filter((e) => e.name === n).length, name);
// Until `succeeded` snapgate-succeeded or `failed` snapgate-failed events have fired.
const waitEnd = (page, succeeded, failed) =>
  page.waitForFunction(
    ([s, f]) => {
      const n = (x) => window.__events.filter((e) => e.name === x).length;
      return n("snapgate-succeeded") >= s || n("snapgate-failed") >= f;
    },
    [succeeded, failed],
    { timeout: 180000 },
  );
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 1400 } });
  page.on("console", (m) => console.error("[page]", m.text()));
  page.on("pageerror", (e) => console.error("[page error]", String(e)));
  page.on("request", (r) => {
    if (r.method() === "POST" && r.url().includes("/media")) seen.formUrl = r.url();
  });
  const js = await page.request.get(base + "/components/snapgate.js");
  seen.module = { status: js.status(), type: js.headers()["content-type"], etag: js.headers()["etag"] };
  const again = await page.request.get(base + "/components/snapgate.js", { headers: { "if-none-match": seen.module.etag } });
  seen.module.revalidated = again.status();
  await page.goto(base + "/upload");
  await page.waitForSelector("#preset option", { state: "attached" });
  await page.waitForFunction(() => customElements.get("snapgate-uploader") && document.querySelector("snapgate-uploader").getAttribute("preset"));
  // The host page listens for the components' events.
  await page.evaluate(() => {
    window.__events = [];
    window.__statuses = [];
    const status = document.querySelector("snapgate-uploader").shadowRoot.querySelector("[part=status]");
    new MutationObserver(() => window.__statuses.push(status.textContent)).observe(status, { childList: true, characterData: true, subtree: true });
    for (const name of ["snapgate-progress", "snapgate-uploaded", "snapgate-succeeded", "snapgate-failed"]) {
      document.addEventListener(name, (e) => window.__events.push({ name, detail: JSON.parse(JSON.stringify(e.detail)) }));
    }
  });
  // Keyboard: Tab from the top of the page reaches the uploader's file input.
  seen.tabs = null;
  for (let i = 1; i <= 6 && seen.tabs === null; i++) {
    await page.keyboard.press("Tab");
    const focused = await page.evaluate(() => {
      const a = document.activeElement;
      const inner = a && a.shadowRoot && a.shadowRoot.activeElement;
      return a && a.tagName === "SNAPGATE-UPLOADER" && inner ? inner.type : null;
    });
    if (focused === "file") seen.tabs = i;
  }
  const input = page.locator("snapgate-uploader input[type=file]");

  // 1. A good video.
  await input.setInputFiles(video);
  await waitEnd(page, 1, 1);
  await page.waitForFunction(
    () => [...document.querySelector("snapgate-uploader").shadowRoot.querySelectorAll("img")].every((i) => i.complete && i.naturalWidth > 0),
    null,
    { timeout: 60000 },
  );
  const sb = page.locator("snapgate-uploader snapgate-storyboard");
  await page.waitForFunction(() => {
    const s = document.querySelector("snapgate-uploader").shadowRoot.querySelector("snapgate-storyboard");
    return s && Number(s.dataset.cues || 0) > 0;
  }, null, { timeout: 60000 });
  if ((await eventCount(page, "snapgate-failed")) > 0) throw new Error("the first upload failed: " + JSON.stringify(await page.evaluate(view)));
  const bar = await page.locator("snapgate-uploader snapgate-storyboard [part=track]").boundingBox();
  await page.mouse.move(bar.x + bar.width * 0.5, bar.y + bar.height / 2);
  seen.cues = Number(await sb.getAttribute("data-cues"));
  seen.preview = await page.evaluate(() => {
    const s = document.querySelector("snapgate-uploader").shadowRoot.querySelector("snapgate-storyboard");
    const p = s.shadowRoot.querySelector("[part=preview]");
    return { display: p.style.display, image: p.style.backgroundImage, width: p.style.width, time: p.dataset.time };
  });
  seen.first = await page.evaluate(view);
  seen.thumbs = await page.evaluate(() =>
    [...document.querySelector("snapgate-uploader").shadowRoot.querySelectorAll("img[part=thumb]")].map((i) => ({ src: i.src, w: i.naturalWidth, h: i.naturalHeight })),
  );
  seen.progress = await page.evaluate(() => window.__events.filter((e) => e.name === "snapgate-progress").map((e) => e.detail.percent));
  seen.succeeded = await page.evaluate(() => window.__events.find((e) => e.name === "snapgate-succeeded").detail);
  seen.succeeded = { uploadId: seen.succeeded.uploadId, state: seen.succeeded.upload && seen.succeeded.upload.state, snapshots: seen.succeeded.outputs.snapshots.length };
  // <snapgate-storyboard> on the host page, for the host page's own <video>.
  await page.evaluate(() => {
    const inner = document.querySelector("snapgate-uploader").shadowRoot.querySelector("snapgate-storyboard");
    const v = document.createElement("video");
    v.id = "host-video";
    v.width = 320;
    const s = document.createElement("snapgate-storyboard");
    s.id = "host-storyboard";
    s.setAttribute("for", "host-video");
    s.setAttribute("token", inner.getAttribute("token"));
    s.setAttribute("src", inner.getAttribute("src"));
    document.body.append(v, s);
  });
  await page.waitForFunction(() => Number(document.getElementById("host-storyboard").dataset.cues || 0) > 0, null, { timeout: 30000 });
  const hostBar = await page.locator("#host-storyboard [part=track]").boundingBox();
  await page.mouse.move(hostBar.x + hostBar.width * 0.25, hostBar.y + hostBar.height / 2);
  seen.hostStoryboard = await page.evaluate(() => {
    const s = document.getElementById("host-storyboard");
    const p = s.shadowRoot.querySelector("[part=preview]");
    return { cues: Number(s.dataset.cues), display: p.style.display, image: p.style.backgroundImage };
  });
  await page.mouse.move(bar.x + bar.width * 0.5, bar.y + bar.height / 2);
  await page.screenshot({ path: screenshot, fullPage: true });

  // 2. Not a video: starts clean, then fails with MPS's code.
  await input.setInputFiles(bad);
  seen.badStart = await page.evaluate(view);
  await waitEnd(page, 2, 1);
  seen.bad = await page.evaluate(view);
  seen.failed = await page.evaluate(() => window.__events.find((e) => e.name === "snapgate-failed").detail);
  delete seen.failed.upload;

  // 3. The video again, its first form post cut by a network error: starts clean (no old
  // images, no old error), retries with backoff, ends with its own images.
  const formUrl = new URL(seen.formUrl).href;
  let cut = 0;
  let mode = "hold";
  let held;
  const holding = new Promise((r) => (held = r));
  await page.route((u) => u.href === formUrl, async (route) => {
    if (route.request().method() === "POST" && mode === "hold") {
      held();
      return; // never answered: the component's Cancel aborts it
    }
    if (route.request().method() === "POST" && cut === 0) {
      cut++;
      return route.abort("connectionreset");
    }
    return route.continue();
  });
  // 2b. An upload cancelled while its form post is in flight.
  const before = await eventCount(page, "snapgate-uploaded");
  await input.setInputFiles(video);
  await holding;
  await page.locator("snapgate-uploader [part=cancel]").click();
  seen.cancelled = await page.evaluate(view);
  seen.cancelled.cancelHidden = await page.evaluate(() => document.querySelector("snapgate-uploader").shadowRoot.querySelector("[part=cancel]").hidden);
  seen.cancelled.uploadedEvents = (await eventCount(page, "snapgate-uploaded")) - before;
  mode = "cut";
  await input.setInputFiles(video);
  seen.againStart = await page.evaluate(view);
  await waitEnd(page, 2, 2);
  seen.again = await page.evaluate(view);
  seen.cut = cut;
  seen.retried = await page.evaluate(() => window.__statuses.some((t) => t.startsWith("Network error, retrying")));
  // 4. A second uploader given `token` and `upload-id` (as after a page reload) follows that upload.
  await page.evaluate(() => {
    const inner = document.querySelector("snapgate-uploader").shadowRoot.querySelector("snapgate-storyboard");
    const id = window.__events.filter((e) => e.name === "snapgate-succeeded").pop().detail.uploadId;
    const u = document.createElement("snapgate-uploader");
    u.id = "follower";
    u.setAttribute("token", inner.getAttribute("token"));
    u.setAttribute("upload-id", id);
    document.body.append(u);
  });
  await page.waitForFunction(() => document.getElementById("follower").shadowRoot.querySelector("[part=status]").textContent === "Succeeded", null, { timeout: 30000 });
  seen.follower = await page.evaluate(() => document.getElementById("follower").shadowRoot.querySelectorAll("img[part=thumb]").length);
  seen.events = {};
  for (const n of ["snapgate-progress", "snapgate-uploaded", "snapgate-succeeded", "snapgate-failed"]) seen.events[n] = await eventCount(page, n);
  seen.log = await page.textContent("#log");
} catch (e) {
  seen.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
