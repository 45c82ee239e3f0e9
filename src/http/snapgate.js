// snapgate's web components, one ES module served by snapgate (GET /components/snapgate.js),
// hand-written, no build step, no dependency:
//
//   <snapgate-uploader endpoint intent-url preset token upload-id>
//     choose or drop a video, post it straight to the object store with the intent's signed form
//     (XHR progress, cancel, retries with backoff on network errors), follow the upload's events
//     stream, then show the thumbnails and the storyboard; failures show MPS's code and message.
//     Events (bubbling, composed): snapgate-progress {uploadId, loaded, total, percent},
//     snapgate-uploaded {uploadId, upload}, snapgate-succeeded {uploadId, upload, outputs},
//     snapgate-failed {uploadId, code, message, upload}.
//   <snapgate-storyboard src for token>
//     hover previews over a <video>'s timeline from a job's WebVTT storyboard (#xywh= cues).
//
// An intent comes from `intent-url` (the team's backend: POST {preset, filename, content_type,
// size_bytes} → what snapgate's POST /v1/uploads answers) or from the `intentProvider` property
// (an async function of {file, preset}). An intent with a `form` is posted as a PostObject form;
// an intent with a `plan` (multipart, not served yet) takes the multipart branch.

const RETRIES = 3;
const BACKOFF_MS = 1000;

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
    this.$.cancel = el("button", { type: "button", part: "cancel", hidden: "" }, "Cancel");
    drop.append(label, this.$.cancel);
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

  /// Stops the upload on show: the request, the events stream, and every late answer.
  cancel() {
    this._run++;
    if (this._xhr) this._xhr.abort();
    if (this._stream) this._stream.close();
    clearTimeout(this._retryTimer);
    this._xhr = this._stream = null;
    this.$.cancel.hidden = true;
    this._say("Cancelled");
  }

  // A new upload starts clean: no earlier images, video, error or late events.
  _reset() {
    this.cancel();
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
    this.$.cancel.hidden = true;
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

  /// Uploads `file`: intent, then the form (or, later, the multipart plan), then follows the job.
  async upload(file) {
    const run = this._reset();
    this._file = file;
    this._say(`Preparing ${file.name}…`);
    this.$.cancel.hidden = false;
    let intent;
    try {
      intent = await this._intent(file);
    } catch (e) {
      return this._fail(run, e.code || "intent_failed", e.message || String(e));
    }
    if (run !== this._run) return;
    this._current = intent;
    this._follow(intent, run, file);
    if (intent.plan) return this._multipart(intent, file, run);
    if (!intent.form) return this._fail(run, "bad_intent", "the intent has neither a form nor a plan");
    this._postForm(intent, file, run, 0);
  }

  // Multipart intents (large files) are not served by snapgate yet: this is where they go.
  _multipart(_intent, _file, run) {
    this._fail(run, "multipart_unsupported", "this component does not upload multipart plans yet");
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
      this._landed(intent, run, xhr.status);
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
  async _landed(intent, run, status) {
    this._say("Uploaded, waiting for the job…");
    let upload = null;
    if (!intent.callback || status === 203) {
      const res = await fetch(resolve(this.endpoint, intent.complete_url), {
        method: "POST",
        headers: { authorization: "Bearer " + intent.browser_token },
      });
      upload = await res.json().catch(() => null);
      if (run !== this._run) return;
      if (!res.ok) return this._fail(run, (upload && upload.code) || `http_${res.status}`, (upload && upload.detail) || "complete failed");
    }
    fire(this, "snapgate-uploaded", { uploadId: intent.upload_id, upload });
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
