// The native /v1 API over fetch: the key, the error shape, uploads, jobs and their Server-Sent Events.
// EventSource cannot send an Authorization header, so events are read from a fetch stream.

const KEY_STORAGE = "reangle.apiKey";
// While the server does not answer: the first wait before asking again, doubled up to the last.
export const RETRY_FIRST_MS = 500;
export const RETRY_MAX_MS = 5000;

/** An answer of the API that is not a success: status, code and message, the field it names, Retry-After. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    this.field = fieldOf(message);
  }
}

/** The input field an error message starts with: "input.seed: ...", "num_inference_steps must be ...",
 * "height would be ...". */
export function fieldOf(message) {
  const match = /^(?:input\.)?([a-z_]+)(?:\.\d+)?(?:[.:]| must| is| would)/.exec(message || "");
  return match ? match[1] : null;
}

export class Api {
  constructor() {
    this.key = localStorage.getItem(KEY_STORAGE) || "";
  }

  setKey(key) {
    this.key = key.trim();
    if (this.key) localStorage.setItem(KEY_STORAGE, this.key);
    else localStorage.removeItem(KEY_STORAGE);
  }

  /** `key`: another key than the one in use, to check it before it replaces that one. */
  async request(method, path, { json, body, signal, key = this.key, extraHeaders = {} } = {}) {
    const headers = { ...extraHeaders };
    if (key) headers.Authorization = `Bearer ${key}`;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    }
    let response;
    try {
      response = await fetch(path, { method, headers, body, signal });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "unreachable", `the server did not answer (${error.message})`);
    }
    if (response.ok) return response.json();
    throw await errorOf(response);
  }

  health() { return this.request("GET", "/healthz"); }
  poses(signal, key = this.key) { return this.request("GET", "/v1/poses", { signal, key }); }
  getAsset(id) { return this.request("GET", `/v1/assets/${encodeURIComponent(id)}`); }
  getJob(id, signal) { return this.request("GET", `/v1/jobs/${encodeURIComponent(id)}`, { signal }); }
  cancelJob(id, signal) { return this.request("POST", `/v1/jobs/${encodeURIComponent(id)}/cancel`, { signal }); }
  listJobs(limit = 20) { return this.request("GET", `/v1/jobs?limit=${limit}`); }

  upload(file, signal) {
    const form = new FormData();
    form.append("file", file, file.name || "image");
    return this.request("POST", "/v1/assets", { body: form, signal });
  }

  /** The same `idempotencyKey` sent again gets the job the first request made, if it made one. */
  submitJob(model, kind, input, { idempotencyKey, signal } = {}) {
    const headers = idempotencyKey ? { "Idempotency-Key": idempotencyKey } : {};
    return this.request("POST", "/v1/jobs", { json: { model, kind, input }, signal, extraHeaders: headers });
  }

  /** Calls onEvent(kind, data) for each event until the job ends, the stream breaks or `signal` aborts. */
  async followEvents(jobId, onEvent, signal) {
    const headers = this.key ? { Authorization: `Bearer ${this.key}` } : {};
    const response = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}/events`, { headers, signal });
    if (!response.ok) throw await errorOf(response);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event) onEvent(event.kind, event.data);
      }
    }
  }
}

/** A failure worth retrying: no answer at all, a 5xx, a timeout or a full queue; not an abort or a refusal. */
export function isTransient(error) {
  if (error.name === "AbortError") return false;
  if (!(error instanceof ApiError)) return true; // the event stream's own fetch failing
  return error.status === 0 || error.status >= 500 || error.status === 408 || error.status === 429;
}

/** Resolves after `ms`; rejects with an AbortError as soon as `signal` aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const abort = () => {
      clearTimeout(timer);
      reject(new DOMException("aborted", "AbortError"));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", abort);
      resolve();
    }, ms);
    if (signal.aborted) abort();
    else signal.addEventListener("abort", abort, { once: true });
  });
}

function parseEvent(block) {
  let kind = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (name === "event") kind = value;
    else if (name === "data") data.push(value);
  }
  return data.length ? { kind, data: JSON.parse(data.join("\n")) } : null;
}

async function errorOf(response) {
  let code = "http_error";
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch {
    // not JSON: keep the status line
  }
  const retry = response.headers.get("Retry-After");
  return new ApiError(response.status, code, message, retry === null ? null : Number(retry));
}
