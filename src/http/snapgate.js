// snapgate's web components, one ES module served by snapgate (GET /components/snapgate.js),
// hand-written, no build step, no dependency:
//
//   <snapgate-uploader endpoint intent-url preset token upload-id>
//     choose or drop a video; a small file is posted straight to the object store with the
//     intent's signed form (XHR progress, cancel, retries with backoff on network errors), a large
//     one (the intent has a `multipart` plan) goes up in parts through presigned UploadPart URLs:
//     a few parts at once, each retried with backoff and jitter, URLs asked for in batches and
//     again when expired, pause and resume, and a checkpoint in localStorage so that choosing the
//     same file after a page reload sends only the parts the store lacks. Then it follows the
//     upload's events stream and shows the thumbnails and the storyboard; failures show MPS's
//     code and message.
//     Events (bubbling, composed): snapgate-progress {uploadId, loaded, total, percent, partsDone,
//     partCount}, snapgate-paused / snapgate-resumed {uploadId, loaded, total, partsDone,
//     partCount, fromCheckpoint}, snapgate-uploaded {uploadId, upload}, snapgate-succeeded
//     {uploadId, upload, outputs}, snapgate-failed {uploadId, code, message, upload}.
//   <snapgate-storyboard src for token>
//     hover previews over a <video>'s timeline from a job's WebVTT storyboard (#xywh= cues).
//
// An intent comes from `intent-url` (the team's backend: POST {preset, filename, content_type,
// size_bytes} → what snapgate's POST /v1/uploads answers) or from the `intentProvider` property
// (an async function of {file, preset}). An intent with a `form` is posted as a PostObject form;
// an intent with `multipart` ({part_size, part_count}) takes the multipart path, whose part URLs,
// part list and completion come from snapgate with the intent's browser token.

const RETRIES = 3;
const BACKOFF_MS = 1000;
/// Parts in flight at once: enough to fill a link, few enough that a cut loses little.
const PART_CONCURRENCY = 4;
/// Tries per part (and per snapgate call) on network errors, 429 and 5xx.
const PART_ATTEMPTS = 6;
const PART_BACKOFF_MS = 500;
const PART_BACKOFF_MAX_MS = 30000;
/// Times a part's URL is asked for again after the store refused it (403: expired).
const URL_REFRESHES = 2;
/// Part URLs asked for per call (snapgate signs at most 100).
const URL_BATCH = 20;
/// A URL this close to its expiry is asked for again before it is used.
const URL_MARGIN_MS = 30000;
/// A part that has sent nothing for this long is cut and retried.
const PART_TIMEOUT_MS = 300000;
const CHECKPOINT_PREFIX = "snapgate-upload:";

/// The earliest of the given timestamps (ISO strings), as an ISO string.
function earliest(...times) {
  const ms = times.filter(Boolean).map(Date.parse).filter(Number.isFinite);
  return ms.length ? new Date(Math.min(...ms)).toISOString() : new Date(Date.now() + 3600000).toISOString();
}

function resolve(base, url) {
  return new URL(url, base || document.baseURI).href;
}

function fire(el, name, detail) {
  el.dispatchEvent(new CustomEvent(name, { detail, bubbles: true, composed: true }));
}

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

/// MPS's code and message for a failed upload (the job's MPS status, else snapgate's last error).
export function failureOf(upload) {
  const job = (upload && upload.job) || {};
  const mps = job.mps || {};
  const last = job.last_error || {};
  if (upload && upload.state === "expired") return { code: "upload_expired", message: "the upload intent expired" };
  return {
    code: mps.code || last.code || "failed",
    message: mps.message || last.message || "the job failed",
  };
}

/// WebVTT thumbnail cues ("start --> end", then "url#xywh=x,y,w,h"); URLs resolved against `base`.
export function parseVtt(text, base) {
  const secs = (t) => t.split(":").reduce((a, p) => a * 60 + parseFloat(p), 0);
  const cues = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const m = lines[i].match(/^([\d:.]+)\s+-->\s+([\d:.]+)/);
    if (!m || !lines[i + 1]) continue;
    const [url, frag] = lines[i + 1].trim().split("#xywh=");
    const [x, y, w, h] = (frag || "0,0,0,0").split(",").map(Number);
    cues.push({ start: secs(m[1]), end: secs(m[2]), url: resolve(base, url), x, y, w, h });
  }
  return cues;
}

/// The wait before retry `attempt` (0, 1, …): exponential, capped, with "equal jitter" (half
/// fixed, half random) so that parts cut together do not come back together.
export function backoffMs(attempt, random = Math.random) {
  const ceiling = Math.min(PART_BACKOFF_MAX_MS, PART_BACKOFF_MS * 2 ** attempt);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/// The localStorage key of a file's checkpoint: the same file (name, size, last modified) for
/// the same snapgate and preset resumes; anything else starts a new upload.
export function checkpointKey(endpoint, preset, file) {
  return `${CHECKPOINT_PREFIX}${endpoint}|${preset || ""}|${file.name}|${file.size}|${file.lastModified}`;
}

function loadCheckpoint(key) {
  try {
    // Checkpoints of other files whose intents have expired are of no use any more.
    for (const k of Object.keys(localStorage)) {
      if (k === key || !k.startsWith(CHECKPOINT_PREFIX)) continue;
      const c = JSON.parse(localStorage.getItem(k) || "null");
      if (!c || !(Date.parse(c.expires_at) > Date.now())) localStorage.removeItem(k);
    }
    const c = JSON.parse(localStorage.getItem(key) || "null");
    return c && c.upload_id && c.browser_token && Date.parse(c.expires_at) > Date.now() + URL_MARGIN_MS ? c : null;
  } catch {
    return null;
  }
}

function saveCheckpoint(key, value) {
  try {
    if (value) localStorage.setItem(key, JSON.stringify(value));
    else localStorage.removeItem(key);
  } catch {
    // A full or disabled localStorage loses only the resume after a reload, not the upload.
  }
}

/// The store's `<Code>` and `<Message>` from an OSS XML error body.
function ossError(status, text) {
  const pick = (tag) => ((text || "").match(new RegExp(`<${tag}>([^<]*)</${tag}>`)) || [])[1];
  return { status, code: pick("Code") || `http_${status}`, message: pick("Message") || "the store refused the request" };
}

const isOffline = () => typeof navigator !== "undefined" && navigator.onLine === false;

const retryable = (status) => status === 0 || status === 429 || status >= 500;

/// A file sent to the object store in parts through presigned UploadPart URLs that snapgate signs
/// for this upload only. `run()` sends every part the store lacks and resolves `"done"`, or
/// `"paused"` after `pause()`; it rejects with `{code, message}` on the first part that cannot
/// be sent. Parts cut by a pause, a network error or an expired URL go back in the queue.
export class MultipartUpload {
  /// `plan`: {upload_id, browser_token, part_size, part_count, parts_url}; `done`: the parts
  /// the store has, [{part_number, size}].
  constructor(file, endpoint, plan, done = []) {
    this.file = file;
    this.endpoint = endpoint;
    this.plan = plan;
    this.done = new Map();
    this.restore(done);
    this.urls = new Map();
    /// Parts waiting for a URL: the next batch asks for them first.
    this.unsigned = new Set();
    this.inflight = new Map();
    this.paused = false;
    this.error = null;
    this.timers = new Set();
    this.onprogress = () => {};
    this.onpart = () => {};
    this.onwait = () => {};
  }

  /// The parts the store holds (`GET /parts`): those of another size than planned are sent again.
  restore(stored) {
    this.done.clear();
    for (const p of stored) {
      const [start, end] = this.range(p.part_number);
      if (p.part_number <= this.plan.part_count && p.size === end - start) this.done.set(p.part_number, p.size);
    }
  }

  get total() {
    return this.file.size;
  }

  get loaded() {
    let n = 0;
    for (const s of this.done.values()) n += s;
    for (const p of this.inflight.values()) n += p.loaded;
    return n;
  }

  /// The byte range of part `n` (1-based): [start, end).
  range(n) {
    const start = (n - 1) * this.plan.part_size;
    return [start, Math.min(start + this.plan.part_size, this.file.size)];
  }

  missing() {
    const out = [];
    for (let n = 1; n <= this.plan.part_count; n++) if (!this.done.has(n)) out.push(n);
    return out;
  }

  async run() {
    // A resume right after a pause starts a new generation: workers of the old one that are
    // still unwinding neither queue their part again nor end this run.
    const gen = (this.gen = (this.gen || 0) + 1);
    this.paused = false;
    this.error = null;
    this.queue = this.missing().filter((n) => !this.inflight.has(n));
    const workers = Array.from({ length: PART_CONCURRENCY }, () => this._worker(gen));
    await Promise.all(workers);
    if (gen !== this.gen) return "superseded";
    if (this.error) throw this.error;
    if (this.paused) return "paused";
    const left = this.missing();
    if (left.length) throw { code: "parts_missing", message: `parts ${left.join(", ")} were not sent` };
    return "done";
  }

  /// Stops taking parts and cuts those in flight (they are sent again on `run()`).
  pause() {
    this.paused = true;
    this._wake();
    for (const p of this.inflight.values()) p.xhr.abort();
  }

  _halted(gen = this.gen) {
    return gen !== this.gen || this.paused || this.error !== null;
  }

  // A part not sent goes back to the front of the queue, unless a newer run made its own queue.
  _requeue(n, gen) {
    if (gen === this.gen) this.queue.unshift(n);
  }

  async _worker(gen) {
    while (!this._halted(gen) && this.queue.length) {
      const n = this.queue.shift();
      try {
        await this._sendPart(n, gen);
      } catch (e) {
        if (gen !== this.gen) return;
        if (!this.error) this.error = { code: e.code || "upload_failed", message: e.message || String(e), part: n };
        this.pause();
        this.paused = false;
      }
    }
  }

  // One part until it is stored: URL, PUT, ETag; retries network errors with backoff (waiting
  // for the network when the browser is offline), asks for a new URL when the store says 403.
  async _sendPart(n, gen) {
    let attempt = 0;
    let refreshed = 0;
    for (;;) {
      await this._online();
      if (this._halted(gen)) return this._requeue(n, gen);
      const target = await this._url(n);
      if (this._halted(gen)) return this._requeue(n, gen);
      const r = await this._put(n, target);
      if (r.aborted) return this._requeue(n, gen);
      if (r.ok) {
        this.done.set(n, target.size);
        return this.onpart(n, r.etag);
      }
      if (r.status === 403 && refreshed < URL_REFRESHES) {
        refreshed++;
        this.urls.delete(n);
        continue;
      }
      // Cut by the network going down: no attempt spent, wait for it to come back.
      if (r.status === 0 && isOffline()) continue;
      if (!retryable(r.status) || attempt + 1 >= PART_ATTEMPTS) throw r;
      const wait = backoffMs(attempt++);
      this.onwait({ part: n, attempt, wait_ms: wait, status: r.status });
      await this._sleep(wait);
    }
  }

  _put(n, target) {
    const [start, end] = this.range(n);
    if (target.size !== end - start) {
      return Promise.reject({ code: "bad_plan", message: `part ${n} is ${target.size} bytes in snapgate's plan, ${end - start} in the file` });
    }
    return new Promise((done) => {
      const xhr = new XMLHttpRequest();
      const part = { xhr, loaded: 0 };
      this.inflight.set(n, part);
      const end_ = (r) => {
        this.inflight.delete(n);
        this.onprogress();
        done(r);
      };
      xhr.open(target.method || "PUT", target.url);
      xhr.timeout = PART_TIMEOUT_MS;
      xhr.upload.onprogress = (e) => {
        part.loaded = e.loaded;
        this.onprogress();
      };
      xhr.onload = () => {
        if (xhr.status >= 300) return end_(ossError(xhr.status, xhr.responseText));
        // snapgate completes from the store's own part list, so a bucket whose CORS rule hides
        // ETag still works; the ETag goes to `onpart` when the rule exposes it.
        end_({ ok: true, etag: xhr.getResponseHeader("ETag") });
      };
      xhr.onerror = xhr.ontimeout = () => end_({ status: 0, code: "network_error", message: `part ${n} could not be sent` });
      xhr.onabort = () => end_({ aborted: true });
      // A Blob slice has no type: the browser sends no Content-Type, as the URL was signed.
      xhr.send(this.file.slice(start, end));
    });
  }

  // A usable URL for part `n`: from the cache unless near its expiry, else from a batch.
  async _url(n) {
    for (let asked = 0; ; ) {
      if (this._fresh(n)) {
        this.unsigned.delete(n);
        return this.urls.get(n);
      }
      this.unsigned.add(n);
      if (!this.batch) {
        asked++;
        if (asked > 2) throw { code: "no_part_url", message: `snapgate did not sign part ${n}` };
        // Started on the next task, so that every worker starting now joins this batch.
        this.batch = new Promise((r) => setTimeout(r, 0)).then(() => this._fetchUrls()).finally(() => (this.batch = null));
      }
      await this.batch;
    }
  }

  _fresh(n) {
    const u = this.urls.get(n);
    return !!u && u.expiresAt - URL_MARGIN_MS > Date.now();
  }

  async _fetchUrls() {
    const wanted = [...new Set([...this.unsigned, ...this.queue])].filter((p) => !this._fresh(p)).slice(0, URL_BATCH);
    if (!wanted.length) return;
    const body = await this.api("POST", { part_numbers: wanted });
    const expiresAt = Date.parse(body.expires_at);
    for (const p of body.parts || []) {
      this.urls.set(p.part_number, { url: p.url, method: p.method, size: p.size, expiresAt });
    }
  }

  /// A call to the upload's parts route with the browser token, retried like a part;
  /// rejects with snapgate's problem `code` and `detail`.
  async api(method, body) {
    const url = resolve(this.endpoint, this.plan.parts_url);
    for (let attempt = 0; ; attempt++) {
      await this._online();
      let res = null;
      try {
        res = await fetch(url, {
          method,
          headers: { authorization: "Bearer " + this.plan.browser_token, ...(body ? { "content-type": "application/json" } : {}) },
          body: body ? JSON.stringify(body) : undefined,
        });
      } catch {
        res = null;
      }
      const status = res ? res.status : 0;
      const answer = res ? await res.json().catch(() => ({})) : {};
      if (res && res.ok) return answer;
      if (!retryable(status) || attempt + 1 >= PART_ATTEMPTS || this._halted()) {
        throw { status, code: answer.code || (status ? `http_${status}` : "network_error"), message: answer.detail || answer.title || "snapgate did not answer" };
      }
      await this._sleep(backoffMs(attempt));
    }
  }

  // Offline, a retry would only burn an attempt: wait for the network (or a pause).
  _online() {
    if (!isOffline() || this._halted()) return Promise.resolve();
    this.offline = true;
    this.onwait({ offline: true });
    return new Promise((done) => {
      const back = () => {
        removeEventListener("online", back);
        this.timers.delete(back);
        this.offline = false;
        done();
      };
      addEventListener("online", back);
      this.timers.add(back);
    });
  }

  _sleep(ms) {
    return new Promise((done) => {
      const wake = () => {
        clearTimeout(t);
        this.timers.delete(wake);
        done();
      };
      const t = setTimeout(wake, ms);
      this.timers.add(wake);
    });
  }

  // A pause ends every wait at once.
  _wake() {
    for (const w of [...this.timers]) w();
  }
}

const UPLOADER_CSS = `
  :host { display: block; font: inherit; }
  [part=drop] { border: 2px dashed #999; border-radius: 6px; padding: 1rem; text-align: center; }
  [part=drop].over { border-color: #36c; background: #eef4ff; }
  [part=progress] { width: 100%; height: 1rem; }
  [part=status] { font-weight: 600; }
  [part=error] { color: #b00; }
  [part=error]:empty, [part=result][hidden] { display: none; }
  [part=thumbs] img { width: 160px; margin: 2px; border: 1px solid #ddd; }
  video { width: 100%; max-width: 640px; background: #000; display: block; }
`;

export class SnapgateUploader extends HTMLElement {
  static get observedAttributes() {
    return ["token", "upload-id"];
  }

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.append(el("style", {}, UPLOADER_CSS));
    this.$ = {};
    const drop = (this.$.drop = el("div", { part: "drop" }));
    const label = el("label", { part: "label" }, "Choose or drop a video ");
    this.$.input = el("input", { type: "file", accept: "video/*", part: "input" });
    label.append(this.$.input);
    this.$.pause = el("button", { type: "button", part: "pause", hidden: "" }, "Pause");
    this.$.resume = el("button", { type: "button", part: "resume", hidden: "" }, "Resume");
    this.$.cancel = el("button", { type: "button", part: "cancel", hidden: "" }, "Cancel");
    drop.append(label, this.$.pause, this.$.resume, this.$.cancel);
    this.$.progress = el("progress", { part: "progress", max: "100", value: "0" });
    this.$.status = el("p", { part: "status", role: "status", "aria-live": "polite" }, "Ready");
    this.$.error = el("p", { part: "error", role: "alert" });
    this.$.result = el("div", { part: "result", hidden: "" });
    this.$.thumbs = el("div", { part: "thumbs" });
    this.$.player = el("div", { part: "player" });
    this.$.result.append(this.$.thumbs, this.$.player);
    root.append(drop, this.$.progress, this.$.status, this.$.error, this.$.result);
    this.$.input.addEventListener("change", () => {
      const f = this.$.input.files[0];
      // Emptied, so that choosing the same file again (after a cancel or failure) uploads it.
      this.$.input.value = "";
      if (f) this.upload(f);
    });
    this.$.cancel.addEventListener("click", () => this.cancel());
    this.$.pause.addEventListener("click", () => this.pause());
    this.$.resume.addEventListener("click", () => this.resume());
    drop.addEventListener("dragover", (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      const f = e.dataTransfer && e.dataTransfer.files[0];
      if (f) this.upload(f);
    });
    /** @type {null | ((req: {file: File, preset: string|null}) => Promise<object>)} */
    this.intentProvider = null;
    this._run = 0;
  }

  connectedCallback() {
    this._followGiven();
  }

  attributeChangedCallback() {
    if (this.isConnected) this._followGiven();
  }

  get endpoint() {
    return this.getAttribute("endpoint") || location.origin;
  }

  // With `token` and `upload-id` (an upload the backend made, e.g. after a page reload):
  // follow it without uploading.
  _followGiven() {
    const token = this.getAttribute("token");
    const id = this.getAttribute("upload-id");
    if (!token || !id || (this._current && this._current.upload_id === id)) return;
    const run = this._reset();
    const intent = {
      upload_id: id,
      browser_token: token,
      events_url: `/v1/uploads/${id}/events`,
    };
    this._current = intent;
    this._say("Following the upload…");
    this._follow(intent, run, null);
  }

  /// Stops the upload on show: the request, the parts, the events stream, and every late
  /// answer. A cancelled multipart upload forgets its checkpoint (its intent expires unused).
  cancel() {
    if (this._parts) saveCheckpoint(this._checkpoint, null);
    this._stop();
    this._say("Cancelled");
  }

  // Choosing a file while another uploads stops that one but keeps its checkpoint: choosing
  // it again resumes it.
  _stop() {
    this._run++;
    if (this._xhr) this._xhr.abort();
    if (this._stream) this._stream.close();
    if (this._parts) this._parts.pause();
    clearTimeout(this._retryTimer);
    this._xhr = this._stream = this._parts = null;
    this.$.cancel.hidden = this.$.pause.hidden = this.$.resume.hidden = true;
  }

  // A new upload starts clean: no earlier images, video, error or late events.
  _reset() {
    this._stop();
    this._current = null;
    this.$.progress.value = 0;
    this.$.error.textContent = "";
    this.$.thumbs.replaceChildren();
    for (const v of this.$.player.querySelectorAll("video")) {
      if (v.src.startsWith("blob:")) URL.revokeObjectURL(v.src);
    }
    this.$.player.replaceChildren();
    this.$.result.hidden = true;
    return this._run;
  }

  _say(text) {
    this.$.status.textContent = text;
  }

  _fail(run, code, message, upload) {
    if (run !== this._run) return;
    this.$.cancel.hidden = this.$.pause.hidden = this.$.resume.hidden = true;
    // A failed multipart upload keeps its checkpoint: choosing the file again resumes it.
    if (this._parts) this._parts.pause();
    this._parts = null;
    this.$.error.textContent = `${code}: ${message}`;
    this._say("Failed");
    const uploadId = this._current && this._current.upload_id;
    fire(this, "snapgate-failed", { uploadId, code, message, upload: upload || null });
  }

  async _intent(file) {
    const preset = this.getAttribute("preset");
    if (this.intentProvider) return this.intentProvider({ file, preset });
    const url = this.getAttribute("intent-url");
    if (!url) throw { code: "no_intent", message: "set intent-url or intentProvider" };
    const res = await fetch(resolve(null, url), {
      method: "POST",
      headers: { "content-type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({
        preset,
        filename: file.name,
        content_type: file.type || "application/octet-stream",
        size_bytes: file.size,
      }),
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw { code: body.code || String(res.status), message: body.detail || res.statusText };
    return body;
  }

  /// Uploads `file`: intent (or the file's checkpoint), then the form or the parts, then
  /// follows the job.
  async upload(file) {
    const run = this._reset();
    this._file = file;
    this._checkpoint = checkpointKey(this.endpoint, this.getAttribute("preset"), file);
    this._say(`Preparing ${file.name}…`);
    this.$.cancel.hidden = false;
    const saved = loadCheckpoint(this._checkpoint);
    if (saved) return this._resumeSaved(saved, file, run);
    let intent;
    try {
      intent = await this._intent(file);
    } catch (e) {
      return this._fail(run, e.code || "intent_failed", e.message || String(e));
    }
    if (run !== this._run) return;
    this._current = intent;
    this._follow(intent, run, file);
    if (intent.multipart) return this._multipart(intent, file, run, []);
    if (!intent.form) return this._fail(run, "bad_intent", "the intent has neither a form nor a multipart plan");
    this._postForm(intent, file, run, 0);
  }

  // The same file after a reload: ask the store (through snapgate) which parts it has and send
  // the rest. An upload that landed meanwhile is followed; one that expired starts anew.
  async _resumeSaved(saved, file, run) {
    const probe = new MultipartUpload(file, this.endpoint, saved);
    let stored;
    try {
      stored = await probe.api("GET");
    } catch (e) {
      if (run !== this._run) return;
      const state = e.status ? await this._stateOf(saved) : null;
      if (run !== this._run) return;
      // Unreachable, or the upload still waits but its parts cannot be listed: keep the
      // checkpoint, so that choosing the file again later resumes it.
      if (state === null || state === "waiting") return this._fail(run, e.code, e.message);
      saveCheckpoint(this._checkpoint, null);
      if (state === "expired" || state === "gone") return this.upload(file);
      this._current = saved;
      this._say("Uploaded, waiting for the job…");
      return this._follow(saved, run, file);
    }
    if (run !== this._run) return;
    this._current = saved;
    this._follow(saved, run, file);
    this._multipart(saved, file, run, stored.parts || [], true);
  }

  // The saved upload's state; "gone" when snapgate no longer knows it or its token, null when
  // it cannot be asked.
  async _stateOf(intent) {
    try {
      const res = await fetch(resolve(this.endpoint, intent.status_url), { headers: { authorization: "Bearer " + intent.browser_token } });
      if (res.status === 401 || res.status === 404) return "gone";
      return res.ok ? (await res.json()).state : null;
    } catch {
      return null;
    }
  }

  // The parts: a checkpoint after each one stored, progress by bytes, pause and resume, then
  // the completion (snapgate lists the parts and completes the upload itself).
  async _multipart(intent, file, run, stored, fromCheckpoint = false) {
    const plan = { ...intent, ...intent.multipart, parts_url: intent.parts_url || `/v1/uploads/${intent.upload_id}/parts` };
    const parts = (this._parts = new MultipartUpload(file, this.endpoint, plan, stored));
    const checkpoint = {
      upload_id: intent.upload_id,
      browser_token: intent.browser_token,
      expires_at: earliest(intent.browser_token_expires_at, intent.upload && intent.upload.expires_at, intent.expires_at),
      multipart: { part_size: plan.part_size, part_count: plan.part_count },
      parts_url: plan.parts_url,
      status_url: intent.status_url || `/v1/uploads/${intent.upload_id}`,
      events_url: intent.events_url,
      complete_url: intent.complete_url,
      callback: !!intent.callback,
    };
    const save = () => saveCheckpoint(this._checkpoint, { ...checkpoint, parts_done: [...parts.done.keys()].sort((a, b) => a - b) });
    save();
    parts.onpart = () => run === this._run && save();
    parts.onprogress = () => run === this._run && this._partsProgress(parts, "Uploading…");
    parts.onwait = (w) => {
      if (run !== this._run || parts.paused) return;
      if (w.offline) return this._partsProgress(parts, "Uploading…");
      const why = w.status ? `the store answered ${w.status}` : "network error";
      this._say(`Part ${w.part}: ${why}, retrying in ${(w.wait_ms / 1000).toFixed(1)} s…`);
    };
    if (fromCheckpoint) fire(this, "snapgate-resumed", { ...this._partsDetail(parts), fromCheckpoint: true });
    this.$.pause.hidden = false;
    this._partsProgress(parts, fromCheckpoint ? "Resuming…" : "Uploading…");
    this._sendParts(intent, parts, run);
  }

  async _sendParts(intent, parts, run) {
    let outcome;
    try {
      outcome = await parts.run();
      // snapgate completes with what the store lists: a part it lacks or holds at another
      // size (e.g. lost with the store's answer) is sent again, once.
      if (outcome === "done" && (await this._partsToResend(intent, parts, run))) outcome = await parts.run();
    } catch (e) {
      return this._fail(run, e.code || "upload_failed", e.message || String(e));
    }
    if (run !== this._run || outcome !== "done") return;
    this._parts = null;
    this.$.pause.hidden = this.$.resume.hidden = true;
    this.$.progress.value = 100;
    // Someone must complete a multipart upload: the browser always calls `complete`.
    if (await this._landed(intent, run, true)) saveCheckpoint(this._checkpoint, null);
  }

  async _partsToResend(intent, parts, run) {
    if (parts.checked || run !== this._run) return false;
    parts.checked = true;
    const stored = await parts.api("GET");
    parts.restore(stored.parts || []);
    return parts.missing().length > 0;
  }

  /// Pauses a multipart upload: parts in flight are cut and sent again on `resume()`.
  pause() {
    const parts = this._parts;
    if (!parts || parts.paused || this.$.pause.hidden) return;
    // The button pressed disappears: keyboard focus moves to its counterpart.
    const focused = this.shadowRoot.activeElement === this.$.pause;
    parts.pause();
    this.$.pause.hidden = true;
    this.$.resume.hidden = false;
    if (focused) this.$.resume.focus();
    this._partsProgress(parts, "Paused");
    fire(this, "snapgate-paused", this._partsDetail(parts));
  }

  resume() {
    const parts = this._parts;
    if (!parts || !parts.paused) return;
    const focused = this.shadowRoot.activeElement === this.$.resume;
    this.$.resume.hidden = true;
    this.$.pause.hidden = false;
    if (focused) this.$.pause.focus();
    parts.paused = false;
    this._partsProgress(parts, "Uploading…");
    fire(this, "snapgate-resumed", { ...this._partsDetail(parts), fromCheckpoint: false });
    this._sendParts(this._current, parts, this._run);
  }

  _partsDetail(parts) {
    const uploadId = this._current && this._current.upload_id;
    return { uploadId, loaded: parts.loaded, total: parts.total, partsDone: parts.done.size, partCount: parts.plan.part_count };
  }

  // Progress by bytes (parts stored plus bytes of parts in flight) on the bar and in the
  // events; the announced status line changes only per part stored, not per byte.
  _partsProgress(parts, what) {
    const d = this._partsDetail(parts);
    const percent = d.total ? Math.floor((100 * d.loaded) / d.total) : 100;
    this.$.progress.value = percent;
    // While paused or offline, late answers of parts cut do not say "Uploading".
    const state = parts.paused ? "Paused" : parts.offline ? null : what;
    const text = state ? `${state} ${d.partsDone} of ${d.partCount} parts` : "Offline, waiting for the network…";
    if (this.$.status.textContent !== text) this._say(text);
    fire(this, "snapgate-progress", { ...d, percent });
  }

  // The signed form, fields in order, the file last; progress from the XHR upload; a network
  // error retries the whole post (a form cannot resume) after 1 s, 2 s, 4 s.
  _postForm(intent, file, run, attempt) {
    const form = new FormData();
    for (const f of intent.form.fields) form.append(f.name, f.value);
    form.append("file", file);
    const xhr = (this._xhr = new XMLHttpRequest());
    xhr.open(intent.form.method || "POST", intent.form.url);
    xhr.upload.onprogress = (e) => {
      if (run !== this._run || !e.lengthComputable) return;
      const percent = Math.round((100 * e.loaded) / e.total);
      this.$.progress.value = percent;
      this._say(`Uploading… ${percent} %`);
      fire(this, "snapgate-progress", { uploadId: intent.upload_id, loaded: e.loaded, total: e.total, percent });
    };
    xhr.onload = () => {
      if (run !== this._run) return;
      this._xhr = null;
      if (xhr.status >= 300) {
        const code = (xhr.responseText.match(/<Code>([^<]*)<\/Code>/) || [])[1] || `http_${xhr.status}`;
        const msg = (xhr.responseText.match(/<Message>([^<]*)<\/Message>/) || [])[1] || "the store refused the upload";
        return this._fail(run, code, msg);
      }
      this.$.progress.value = 100;
      this._landed(intent, run, xhr.status === 203);
    };
    xhr.onerror = () => {
      if (run !== this._run) return;
      this._xhr = null;
      if (attempt >= RETRIES) return this._fail(run, "network_error", `the upload failed ${attempt + 1} times`);
      const wait = BACKOFF_MS * 2 ** attempt;
      this._say(`Network error, retrying in ${wait / 1000} s…`);
      this._retryTimer = setTimeout(() => this._postForm(intent, file, run, attempt + 1), wait);
    };
    xhr.send(form);
  }

  // The object is in the store: without a callback, tell snapgate (it checks, then makes the job).
  // `mustComplete`: the callback did not come (203) or there is none for this path (multipart).
  // True once snapgate has the upload.
  async _landed(intent, run, mustComplete) {
    this._say("Uploaded, waiting for the job…");
    let upload = null;
    if (!intent.callback || mustComplete) {
      let res = null;
      try {
        res = await fetch(resolve(this.endpoint, intent.complete_url), {
          method: "POST",
          headers: { authorization: "Bearer " + intent.browser_token },
        });
      } catch {
        res = null;
      }
      upload = res && (await res.json().catch(() => null));
      if (run !== this._run) return false;
      if (!res) return this._fail(run, "network_error", "snapgate could not be told that the upload landed");
      if (!res.ok) return this._fail(run, (upload && upload.code) || `http_${res.status}`, (upload && upload.detail) || "complete failed");
    }
    fire(this, "snapgate-uploaded", { uploadId: intent.upload_id, upload });
    return true;
  }

  // Live status: one `state` event per state, then `outputs`; the stream closes at a final state.
  _follow(intent, run, file) {
    const url = new URL(resolve(this.endpoint, intent.events_url));
    url.searchParams.set("access_token", intent.browser_token);
    const es = (this._stream = new EventSource(url.href));
    let last = null;
    es.addEventListener("state", (e) => {
      if (run !== this._run) return es.close();
      last = JSON.parse(e.data);
      if (last.state !== "waiting") this._say(`State: ${last.state}`);
      if (last.state === "failed" || last.state === "expired") {
        es.close();
        const f = failureOf(last);
        this._fail(run, f.code, f.message, last);
      }
    });
    es.addEventListener("outputs", (e) => {
      es.close();
      if (run !== this._run) return;
      const outputs = JSON.parse(e.data);
      this.$.cancel.hidden = true;
      this._say("Succeeded");
      this._show(intent, outputs, file);
      fire(this, "snapgate-succeeded", { uploadId: intent.upload_id, upload: last, outputs });
    });
  }

  _show(intent, outputs, file) {
    for (const s of outputs.snapshots || []) {
      if (!s.file) continue;
      this.$.thumbs.append(el("img", { part: "thumb", src: s.file.url, alt: `snapshot ${s.count}` }));
    }
    if ((outputs.sprites || []).length && file) {
      const video = el("video", { id: "video", part: "video", controls: "", muted: "", playsinline: "" });
      video.src = URL.createObjectURL(file);
      const sb = el("snapgate-storyboard", {
        part: "storyboard",
        for: "video",
        src: resolve(this.endpoint, `/v1/uploads/${intent.upload_id}/storyboard.vtt`),
        token: intent.browser_token,
      });
      this.$.player.append(video, sb);
    }
    this.$.result.hidden = false;
  }
}

const STORYBOARD_CSS = `
  :host { display: block; position: relative; max-width: 640px; }
  [part=track] { position: relative; height: 14px; background: #ddd; border-radius: 3px; cursor: pointer; }
  [part=played] { position: absolute; left: 0; top: 0; bottom: 0; background: #4a7; border-radius: 3px; }
  [part=preview] { position: absolute; bottom: 22px; display: none; border: 2px solid #fff;
    box-shadow: 0 0 4px #000; background-repeat: no-repeat; pointer-events: none; }
  [part=time] { position: absolute; bottom: 0; left: 0; right: 0; text-align: center; color: #fff;
    font: 11px monospace; text-shadow: 0 0 2px #000; }
`;

export class SnapgateStoryboard extends HTMLElement {
  static get observedAttributes() {
    return ["src", "for", "token"];
  }

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.append(el("style", {}, STORYBOARD_CSS));
    this.track = el("div", { part: "track", role: "presentation" });
    this.played = el("div", { part: "played" });
    this.preview = el("div", { part: "preview" });
    this.time = el("span", { part: "time" });
    this.preview.append(this.time);
    this.track.append(this.played, this.preview);
    root.append(this.track);
    /** The parsed cues: {start, end, url, x, y, w, h}. */
    this.cues = [];
    this.track.addEventListener("mousemove", (e) => this._hover(e.clientX));
    this.track.addEventListener("mouseleave", () => (this.preview.style.display = "none"));
    this.track.addEventListener("click", (e) => {
      const v = this.video;
      if (v) v.currentTime = this._timeAt(e.clientX);
    });
    this._onTime = () => {
      const v = this.video;
      if (v) this.played.style.width = (100 * v.currentTime) / this._duration() + "%";
    };
  }

  connectedCallback() {
    this._load();
  }

  attributeChangedCallback() {
    if (this.isConnected) this._load();
  }

  /// The `<video>` named by `for`, in this element's tree (document or shadow root).
  get video() {
    const id = this.getAttribute("for");
    return id ? this.getRootNode().getElementById(id) : null;
  }

  async _load() {
    const v = this.video;
    if (this._bound && this._bound !== v) this._bound.removeEventListener("timeupdate", this._onTime);
    if (v && this._bound !== v) v.addEventListener("timeupdate", this._onTime);
    this._bound = v;
    const src = this.getAttribute("src");
    const seq = (this._seq = (this._seq || 0) + 1);
    this.cues = [];
    delete this.dataset.cues;
    if (!src) return;
    const token = this.getAttribute("token");
    const res = await fetch(src, token ? { headers: { authorization: "Bearer " + token } } : {});
    if (seq !== this._seq) return;
    if (!res.ok) {
      fire(this, "snapgate-storyboard-error", { status: res.status });
      return;
    }
    this.cues = parseVtt(await res.text(), res.url || src);
    this.dataset.cues = String(this.cues.length);
    fire(this, "snapgate-storyboard-loaded", { cues: this.cues.length });
  }

  _duration() {
    const v = this.video;
    return (v && Number.isFinite(v.duration) && v.duration) || (this.cues.length ? this.cues[this.cues.length - 1].end : 0);
  }

  _timeAt(clientX) {
    const r = this.track.getBoundingClientRect();
    return Math.max(0, Math.min(1, (clientX - r.left) / r.width)) * this._duration();
  }

  _hover(clientX) {
    const t = this._timeAt(clientX);
    const c = this.cues.find((c) => t >= c.start && t < c.end) || this.cues[this.cues.length - 1];
    if (!c) return;
    const r = this.track.getBoundingClientRect();
    const p = this.preview;
    p.style.display = "block";
    p.style.width = c.w + "px";
    p.style.height = c.h + "px";
    p.style.backgroundImage = `url("${c.url}")`;
    p.style.backgroundPosition = `${-c.x}px ${-c.y}px`;
    p.style.left = Math.max(0, Math.min(r.width - c.w, clientX - r.left - c.w / 2)) + "px";
    p.dataset.time = t.toFixed(2);
    this.time.textContent = `${Math.floor(t / 60)}:${String(Math.floor(t % 60)).padStart(2, "0")}`;
  }
}

if (!customElements.get("snapgate-uploader")) customElements.define("snapgate-uploader", SnapgateUploader);
if (!customElements.get("snapgate-storyboard")) customElements.define("snapgate-storyboard", SnapgateStoryboard);
