// A large video through <snapgate-uploader>'s multipart path in Debian's headless chromium
// (playwright-core, no browser download), on snapgate's /upload page: paused and resumed with
// the keyboard, the network cut after CUT parts are stored, the page reloaded, the same file
// chosen again. Every part PUT is recorded (part number, answer) from the browser context, so
// the test can tell which parts were sent after the reload; the store's own part list (GET
// /v1/uploads/{id}/parts with the browser token from the checkpoint) is read just before the
// file is chosen again. Then the thumbnails, the storyboard and a screenshot.
// Last, REFUSED (another multipart file) has its part 2 refused by the store every time: the
// component asks for a new URL, then fails with the store's code and message.
// Usage: node resume.mjs BASE_URL VIDEO SCREENSHOT CUT REFUSED. Prints one JSON line.
import { chromium } from "playwright-core";

const [base, video, screenshot, cutArg, refused] = process.argv.slice(2);
const cut = Number(cutArg);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const seen = { puts: [], signed: [], maxInFlight: 0 };
let inFlight = 0;
// Where the run is, on stderr (the test prints it when the run fails).
const step = (what) => console.error(`[step ${new Date().toISOString()}] ${what}`);
let phase = "first";
const partOf = (url) => {
  const u = new URL(url);
  return u.searchParams.has("uploadId") ? Number(u.searchParams.get("partNumber")) : null;
};
// Distinct parts the store answered 200 to (a part whose answer raced a pause is sent twice).
const stored200 = new Set();
let onStored = () => {};

const uploader = "document.querySelector('snapgate-uploader')";
const shadow = (p) => `${uploader}.shadowRoot.querySelector('[part=${p}]')`;
const status = (page) => page.evaluate(`${shadow("status")}.textContent`);
// The host page records the component's events and every status line it announces.
const listen = (page) =>
  page.evaluate(() => {
    window.__events = [];
    window.__statuses = [];
    const u = document.querySelector("snapgate-uploader");
    const s = u.shadowRoot.querySelector("[part=status]");
    new MutationObserver(() => window.__statuses.push(s.textContent)).observe(s, { childList: true, characterData: true, subtree: true });
    for (const name of ["snapgate-progress", "snapgate-paused", "snapgate-resumed", "snapgate-uploaded", "snapgate-succeeded", "snapgate-failed"]) {
      document.addEventListener(name, (e) => window.__events.push({ name, detail: JSON.parse(JSON.stringify(e.detail)) }));
    }
  });
const events = (page, name) => page.evaluate((n) => window.__events.filter((e) => e.name === n).map((e) => e.detail), name);
const open = async (page) => {
  await page.goto(base + "/upload");
  await page.waitForFunction(() => customElements.get("snapgate-uploader") && document.querySelector("snapgate-uploader").getAttribute("preset"));
  await listen(page);
};

try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 1400 } });
  context.on("request", (r) => {
    const part = r.method() === "PUT" ? partOf(r.url()) : null;
    if (part !== null) {
      seen.puts.push({ phase, part, status: null, at: Date.now() });
      seen.maxInFlight = Math.max(seen.maxInFlight, ++inFlight);
    }
    if (r.method() === "POST" && new URL(r.url()).pathname.endsWith("/parts")) seen.signed.push(r.postDataJSON().part_numbers);
  });
  // The store's first answer to part 1 is OSS's expired-URL 403 (the component must ask snapgate
  // for a new URL), to part 2 a 503 (it must retry after a backoff).
  const faults = new Map([
    [1, [403, "AccessDenied", "Request has expired."]],
    [2, [503, "ServiceUnavailable", "Please reduce your request rate."]],
  ]);
  await context.route(
    (url) => partOf(url.href) !== null,
    (route) => {
      const r = route.request();
      const always = r.url().includes("refused") && partOf(r.url()) === 2 && [403, "AccessDenied", "The bucket policy refuses this part."];
      const fault = r.method() === "PUT" && (always || faults.get(partOf(r.url())));
      if (!fault) return route.continue();
      faults.delete(partOf(r.url()));
      const [status, code, message] = fault;
      return route.fulfill({
        status,
        headers: { "access-control-allow-origin": "*", "content-type": "application/xml" },
        body: `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${message}</Message></Error>`,
      });
    },
  );
  const settle = (r, status) => {
    const part = r.method() === "PUT" ? partOf(r.url()) : null;
    if (part === null) return;
    const p = seen.puts.findLast((x) => x.part === part && x.status === null);
    if (p) p.status = status;
    if (status === 200 && phase === "first" && stored200.add(part).size >= cut) onStored();
  };
  // In flight ends with the event itself, before the answer's status is awaited.
  const ended = (r) => {
    if (r.method() === "PUT" && partOf(r.url()) !== null) inFlight--;
  };
  context.on("requestfinished", async (r) => {
    ended(r);
    settle(r, (await r.response()).status());
  });
  context.on("requestfailed", (r) => {
    ended(r);
    settle(r, r.failure() ? r.failure().errorText : "failed");
  });
  const page = await context.newPage();
  page.on("console", (m) => console.error("[page]", m.text()));
  page.on("pageerror", (e) => console.error("[page error]", String(e)));
  await open(page);
  const input = page.locator("snapgate-uploader input[type=file]");
  const storedEnough = new Promise((r) => (onStored = r));

  // 1. Pause and resume from the keyboard once two parts are stored.
  step("choose the file");
  await input.setInputFiles(video);
  await page.waitForFunction(() => window.__events.some((e) => e.name === "snapgate-progress" && e.detail.partsDone >= 2), null, { timeout: 120000 });
  step("pause");
  await page.locator("snapgate-uploader [part=pause]").focus();
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => window.__events.some((e) => e.name === "snapgate-paused"));
  const putsAtPause = seen.puts.length;
  await page.waitForTimeout(1500);
  seen.paused = {
    status: await status(page),
    putsWhilePaused: seen.puts.length - putsAtPause,
    focus: await page.evaluate(() => document.querySelector("snapgate-uploader").shadowRoot.activeElement?.getAttribute("part")),
    detail: (await events(page, "snapgate-paused"))[0],
  };
  step("resume");
  await page.keyboard.press("Enter");
  seen.resumedLive = (await events(page, "snapgate-resumed"))[0];
  seen.afterResumeStatus = await status(page);
  seen.plan = (await events(page, "snapgate-progress")).pop();
  // Paused and resumed again by the host page in one task (the element's methods): the parts
  // cut come back once, and the run that was paused does not end the new one.
  await page.waitForFunction((n) => window.__events.some((e) => e.name === "snapgate-progress" && e.detail.partsDone > n), seen.plan.partsDone, { timeout: 120000 });
  step("pause and resume at once");
  await page.evaluate(() => {
    const u = document.querySelector("snapgate-uploader");
    u.pause();
    u.resume();
  });
  seen.quick = { paused: (await events(page, "snapgate-paused")).length, resumed: (await events(page, "snapgate-resumed")).length };

  // 2. The network cut once CUT parts are stored, then the page unloaded while offline (its
  // uploads are gone with it), back online, and the page loaded again.
  await storedEnough;
  step("offline");
  await context.setOffline(true);
  await page.waitForFunction(() => window.__statuses.some((t) => t.startsWith("Offline")), null, { timeout: 30000 });
  seen.cutStatus = await status(page);
  seen.firstStatuses = await page.evaluate(() => window.__statuses.filter((t, i, a) => a.indexOf(t) === i));
  seen.cutAt = { stored200: stored200.size, puts: seen.puts.length };
  // A reload that fails offline may leave the old document running (Chromium keeps it until
  // the error page commits), and it would resume when the network returns: leave the page for
  // about:blank, which loads offline, so that nothing of the first page survives.
  step("reload");
  await page.goto("about:blank");
  phase = "between";
  await context.setOffline(false);
  await open(page);
  const checkpoint = await page.evaluate(() => {
    const k = Object.keys(localStorage).filter((k) => k.startsWith("snapgate-upload:"));
    return k.length === 1 ? { key: k[0], ...JSON.parse(localStorage.getItem(k[0])) } : { keys: k };
  });
  seen.checkpoint = { key: checkpoint.key, upload_id: checkpoint.upload_id, parts_done: checkpoint.parts_done, has_token: !!checkpoint.browser_token };
  const listed = await page.request.get(`${base}/v1/uploads/${checkpoint.upload_id}/parts`, { headers: { authorization: "Bearer " + checkpoint.browser_token } });
  seen.storedBeforeResume = listed.ok() ? (await listed.json()).parts.map((p) => p.part_number) : { status: listed.status(), body: await listed.text() };

  // 3. The same file chosen again: only the missing parts go up, then the job.
  step("choose the file again");
  phase = "resumed";
  await input.setInputFiles(video);
  await page.waitForFunction(() => window.__events.some((e) => e.name === "snapgate-succeeded" || e.name === "snapgate-failed"), null, { timeout: 300000 });
  const failed = await events(page, "snapgate-failed");
  if (failed.length) throw new Error("the resumed upload failed: " + JSON.stringify(failed[0]));
  await page.waitForFunction(
    () => {
      const r = document.querySelector("snapgate-uploader").shadowRoot;
      const imgs = [...r.querySelectorAll("img[part=thumb]")];
      const sb = r.querySelector("snapgate-storyboard");
      return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0) && sb && Number(sb.dataset.cues || 0) > 0;
    },
    null,
    { timeout: 60000 },
  );
  step("succeeded");
  seen.resumedFromCheckpoint = (await events(page, "snapgate-resumed"))[0];
  seen.succeeded = (await events(page, "snapgate-succeeded"))[0];
  seen.succeeded = { uploadId: seen.succeeded.uploadId, state: seen.succeeded.upload.state, snapshots: seen.succeeded.outputs.snapshots.length };
  seen.uploaded = (await events(page, "snapgate-uploaded")).length;
  seen.statuses = await page.evaluate(() => window.__statuses.filter((t, i, a) => a.indexOf(t) === i).slice(0, 8));
  seen.final = await page.evaluate(() => {
    const r = document.querySelector("snapgate-uploader").shadowRoot;
    const q = (p) => r.querySelector(`[part=${p}]`);
    return {
      status: q("status").textContent,
      role: q("status").getAttribute("role"),
      live: q("status").getAttribute("aria-live"),
      progress: q("progress").value,
      error: q("error").textContent,
      thumbs: r.querySelectorAll("img[part=thumb]").length,
      cues: Number(r.querySelector("snapgate-storyboard").dataset.cues),
      pauseHidden: q("pause").hidden,
      checkpoints: Object.keys(localStorage).filter((k) => k.startsWith("snapgate-upload:")).length,
    };
  });
  const bar = await page.locator("snapgate-uploader snapgate-storyboard [part=track]").boundingBox();
  await page.mouse.move(bar.x + bar.width * 0.6, bar.y + bar.height / 2);
  seen.preview = await page.evaluate(() => {
    const s = document.querySelector("snapgate-uploader").shadowRoot.querySelector("snapgate-storyboard");
    const p = s.shadowRoot.querySelector("[part=preview]");
    return { display: p.style.display, image: p.style.backgroundImage };
  });
  await page.screenshot({ path: screenshot, fullPage: true });

  // 4. A part the store always refuses: a new URL asked for, then the store's code shown.
  step("a refused part");
  phase = "refused";
  const signedBefore = seen.signed.length;
  await input.setInputFiles(refused);
  await page.waitForFunction(() => window.__events.some((e) => e.name === "snapgate-failed"), null, { timeout: 120000 });
  seen.refused = await page.evaluate(() => {
    const r = document.querySelector("snapgate-uploader").shadowRoot;
    const q = (p) => r.querySelector(`[part=${p}]`);
    const f = window.__events.find((e) => e.name === "snapgate-failed").detail;
    return {
      uploadId: f.uploadId,
      code: f.code,
      message: f.message,
      error: q("error").textContent,
      status: q("status").textContent,
      images: r.querySelectorAll("img").length,
      pauseHidden: q("pause").hidden,
      checkpoints: Object.keys(localStorage).filter((k) => k.startsWith("snapgate-upload:") && k.includes("refused")).length,
    };
  });
  seen.refused.signedPart2 = seen.signed.slice(signedBefore).filter((b) => b.includes(2)).length;

  // 5. Its checkpoint with a token snapgate does not know (as after a token expiry): dropped,
  // and the same file starts a new upload.
  step("a checkpoint snapgate does not honour");
  await page.evaluate(() => {
    const k = Object.keys(localStorage).find((k) => k.startsWith("snapgate-upload:") && k.includes("refused"));
    const c = JSON.parse(localStorage.getItem(k));
    c.browser_token = "sgu_" + "x".repeat(40);
    localStorage.setItem(k, JSON.stringify(c));
    window.__events.length = 0;
  });
  await input.setInputFiles(refused);
  await page.waitForFunction(() => window.__events.some((e) => e.name === "snapgate-failed"), null, { timeout: 120000 });
  seen.renewed = await page.evaluate(() => {
    const k = Object.keys(localStorage).find((k) => k.startsWith("snapgate-upload:") && k.includes("refused"));
    const f = window.__events.find((e) => e.name === "snapgate-failed").detail;
    return { uploadId: f.uploadId, code: f.code, checkpointUpload: JSON.parse(localStorage.getItem(k)).upload_id, resumed: window.__events.filter((e) => e.name === "snapgate-resumed").length };
  });

  // 6. snapgate unreachable when the file is chosen again (its part list cannot be had, after
  // the retries): a network failure, and the checkpoint is kept for later.
  step("snapgate unreachable");
  const unreachable = (url) => url.pathname.endsWith("/parts");
  await page.route(unreachable, (route) => (route.request().method() === "GET" ? route.abort("connectionrefused") : route.continue()));
  await page.evaluate(() => (window.__events.length = 0));
  await input.setInputFiles(refused);
  await page.waitForFunction(() => window.__events.some((e) => e.name === "snapgate-failed"), null, { timeout: 120000 });
  await page.unroute(unreachable);
  seen.unreachable = await page.evaluate(() => {
    const k = Object.keys(localStorage).find((k) => k.startsWith("snapgate-upload:") && k.includes("refused"));
    const f = window.__events.find((e) => e.name === "snapgate-failed").detail;
    return { code: f.code, checkpointUpload: k ? JSON.parse(localStorage.getItem(k)).upload_id : null };
  });
} catch (e) {
  seen.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
