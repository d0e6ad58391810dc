// Running jobs: the request from the form, submit, live progress from the job's events, cancel, and every
// error shown next to the control that caused it.
import { RETRY_FIRST_MS, RETRY_MAX_MS, isTransient, sleep } from "./api.js";
import { round } from "./camera.js";

export const CAMERA_MODEL = "qwen-edit-multiangle-2511";
const ORBIT_AZIMUTHS = [0, 45, 90, 135, 180, 225, 270, 315];
const POLL_MS = 500;
const FOLLOWED_JOB = "reangle.followedJob"; // session storage: the job this tab follows

// The input field an error names -> the control whose error line shows it.
const CONTROL_OF_FIELD = {
  images: "images",
  image: "images",
  prompt: "prompt",
  acceleration: "acceleration",
  num_inference_steps: "steps",
  guidance_scale: "guidance",
  lora_scale: "lora-scale",
  seed: "seed",
  num_outputs: "num-outputs",
  aspect_ratio: "aspect-ratio",
  width: "width",
  height: "width",
  output_format: "output-format",
  horizontal_angle: "horizontal-angle",
  vertical_angle: "vertical-angle",
  zoom: "zoom",
};
// An input field as the page calls it, in the messages it shows.
const WORDS_OF_FIELD = {
  images: "The image",
  image: "The image",
  prompt: "Prompt",
  acceleration: "Acceleration",
  num_inference_steps: "Steps",
  guidance_scale: "Guidance",
  lora_scale: "LoRA scale",
  seed: "Seed",
  num_outputs: "Outputs",
  aspect_ratio: "Aspect ratio",
  width: "Width",
  height: "Height",
  output_format: "Format",
  horizontal_angle: "Horizontal angle",
  vertical_angle: "Vertical angle",
  zoom: "Zoom",
};
// The number fields, the limits the page knows (the server's, for the camera edit model) and the API's default
// where the page shows it (not sent).
const NUMBER_FIELDS = [
  { id: "steps", field: "num_inference_steps", whole: true, low: 1, high: 100 },
  { id: "guidance", field: "guidance_scale", low: 0, high: 20 },
  { id: "lora-scale", field: "lora_scale", low: 0, high: 4, omitted: 1 },
  // a JSON number from the page is a double: a larger seed would reach the server as another number
  { id: "seed", field: "seed", whole: true, low: 0, high: Number.MAX_SAFE_INTEGER },
  { id: "num-outputs", field: "num_outputs", whole: true, low: 1, high: 4, omitted: 1 },
  { id: "width", field: "width", whole: true, low: 16 },
  { id: "height", field: "height", whole: true, low: 16 },
];

const $ = (id) => document.getElementById(id);

/** Fields the page will not send as they are, each with its message: nothing was sent. */
export class FormError extends Error {
  constructor(problems) {
    super(problems.map((problem) => problem.text).join(" "));
    this.problems = problems; // [{ line, controls, text }]: the error line's control, the controls to mark
  }
}

/** A number field's value (null when empty), or its problem in `problems`. */
function numberOf({ id, field, whole, low, high }, problems) {
  const control = $(id);
  const name = WORDS_OF_FIELD[field];
  // a number input whose text is not a number ("1e", "--1") reads as "": only `badInput` tells it from empty
  if (control.validity.badInput) {
    problems.push({ line: CONTROL_OF_FIELD[field], controls: [id], text: `${name} must be a number.` });
    return null;
  }
  if (control.value === "") return null;
  const value = Number(control.value);
  const range = high === undefined ? `at least ${low}` : `between ${low} and ${high}`;
  if ((whole && !Number.isInteger(value)) || value < low || value > high) {
    const text = `${name} must be ${whole ? "a whole number " : ""}${range}, not ${control.value}.`;
    problems.push({ line: CONTROL_OF_FIELD[field], controls: [id], text });
    return null;
  }
  return value;
}

/** The advanced panel's values that differ from the API's defaults, as input fields (with `outputs`, the
 * number of outputs too); a FormError for the fields the page cannot send as they are. */
export function readOptions({ outputs = false } = {}) {
  const options = {};
  const problems = [];
  const prompt = $("prompt").value.trim();
  if (prompt) options.prompt = prompt;
  if ($("acceleration").value !== "high") options.acceleration = $("acceleration").value;
  for (const spec of NUMBER_FIELDS) {
    if (spec.field === "num_outputs" && !outputs) continue;
    const value = numberOf(spec, problems);
    if (value !== null && value !== spec.omitted) options[spec.field] = value;
  }
  if ($("aspect-ratio").value) {
    options.aspect_ratio = $("aspect-ratio").value;
    if (options.width !== undefined || options.height !== undefined) {
      problems.push({
        line: "width",
        controls: ["width", "height", "aspect-ratio"],
        text: "Give either a width and height or an aspect ratio, not both.",
      });
    }
  }
  if ($("output-format").value !== "png") options.output_format = $("output-format").value;
  if (problems.length) throw new FormError(problems);
  return options;
}

export function cameraFields(camera) {
  return {
    horizontal_angle: round(camera.horizontal),
    vertical_angle: round(camera.vertical),
    zoom: round(camera.zoom),
  };
}

export function editInput(assetId, camera) {
  return { images: [assetId], ...cameraFields(camera), ...readOptions({ outputs: true }) };
}

export function orbitInput(assetId, cameras) {
  return { image: assetId, poses: cameras.map(cameraFields), ...readOptions() };
}

export function orbitCameras(camera) {
  return ORBIT_AZIMUTHS.map((horizontal) => ({ ...camera, horizontal }));
}

export function clearErrors() {
  for (const line of document.querySelectorAll(".error")) {
    if (line.id !== "api-key-error") line.textContent = "";
  }
  for (const control of document.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
}

/** A key refused (or missing): said by the key field, which gets the focus, and the panels are locked until
 * a key is accepted. */
export function keyRefused(message) {
  $("api-key-error").textContent = message;
  $("key-status").textContent = "Enter your API key above to start.";
  $("studio").inert = true;
  $("api-key").focus();
}

/** A server's message about an input field in the page's words: "input.num_inference_steps: ..." is
 * "Steps: ...", and "aspect_ratio" within it "aspect ratio". */
export function inPageWords(message, field) {
  const lead = WORDS_OF_FIELD[field];
  const text = lead ? message.replace(/^(?:input\.)?[a-z_]+(?:\.\d+)?/, lead) : message;
  const words = text.replace(/\b(?:input\.)?([a-z]+(?:_[a-z]+)+)\b/g, (name, bare) => {
    const page = WORDS_OF_FIELD[bare];
    if (!page) return name;
    return /^[A-Z][a-z]/.test(page) ? page[0].toLowerCase() + page.slice(1) : page;
  });
  return words[0].toUpperCase() + words.slice(1);
}

/** Where a 422 about `field` is shown: the error line, and the controls marked invalid. */
function placeOf(field, message) {
  // width/height with an aspect ratio: said by the size fields, with all three marked
  if (/\baspect_ratio\b/.test(message) && /\b(?:width|height)\b/.test(message)) {
    return { line: "width", controls: ["width", "height", "aspect-ratio"] };
  }
  const line = CONTROL_OF_FIELD[field];
  if (!line) return null;
  const controls = { images: ["drop-zone"], width: [field] }[line] || [line];
  return { line, controls };
}

/** The server names one size out of its bounds at a time: the other one, out of the same bounds, is marked
 * with it (and said), so that one fix is enough. */
function otherSide(error) {
  const bounds = /must be between (\d+) and (\d+) after rounding down to a multiple of 16/.exec(error.message);
  const other = { width: "height", height: "width" }[error.field];
  if (!bounds || !other || $(other).value === "") return "";
  const side = Math.floor(Number($(other).value) / 16) * 16;
  if (side >= Number(bounds[1]) && side <= Number(bounds[2])) return "";
  $(other).setAttribute("aria-invalid", "true");
  return `${WORDS_OF_FIELD[other]} ${bounds[0]}, got ${$(other).value}.`;
}

function showAt({ line, controls }, text) {
  $(`${line}-error`).textContent = text;
  for (const id of controls) {
    const control = $(id);
    control.setAttribute("aria-invalid", "true");
    const advanced = control.closest("details");
    if (advanced) advanced.open = true;
  }
}

/** Put an error next to its control: the form's own checks and a 422 by field (in the page's words), 401 by
 * the key, 429 with its wait, else by `fallback`. */
export function showError(error, fallback = "generate") {
  if (error instanceof FormError) {
    const said = {}; // width and height share a line
    for (const problem of error.problems) {
      said[problem.line] = [...(said[problem.line] || []), problem.text];
      showAt(problem, said[problem.line].join(" "));
    }
    return;
  }
  let text = error.message;
  if (error.status === 401) {
    keyRefused(`The server refused this key: ${error.message}`);
    text = "The server refused the API key.";
  } else if (error.status === 422) {
    const place = placeOf(error.field, error.message);
    if (place && place.line !== fallback) {
      const other = otherSide(error);
      showAt(place, `${inPageWords(error.message, error.field)}${other ? `. ${other}` : ""}`);
      return;
    }
    if (place) text = inPageWords(error.message, error.field);
  } else if (error.status === 429) {
    const wait = error.retryAfter === null ? "" : ` Try again in ${error.retryAfter} s.`;
    text = `${error.message}.${wait}`;
  }
  $(`${fallback}-error`).textContent = text;
}

/** Submits jobs one at a time, follows them, and hands finished ones to `onDone(job)`. The job being
 * followed is remembered for this tab (session storage), so that a reload picks it up again (`resume`). */
export function createJobRunner({ api, onSubmitted, onDone }) {
  // cancelPending: a cancel not answered yet, sent again while the server does not answer; wakeCancel: sends
  // such a kept cancel at once; submitting: aborts the submission request; abandonWait: ends a `waitFor`
  // { id, status, controller, cancelRequested, cancelPending, wakeCancel, submitting, abandonWait, returnFocus }
  let current = null;
  const buttons = ["generate", "orbit", "render-path"].map($);
  const cancel = $("cancel");

  function begin() {
    const pressed = buttons.includes(document.activeElement) ? document.activeElement : null;
    current = {
      id: null,
      status: null,
      controller: new AbortController(),
      cancelRequested: false,
      cancelPending: false,
      wakeCancel: null,
      submitting: null,
      abandonWait: null,
      returnFocus: pressed,
    };
    cancel.disabled = false;
    for (const button of buttons) button.disabled = true;
    // the pressed button is disabled now, which would drop the keyboard focus onto the page itself
    if (pressed) cancel.focus();
  }

  function end() {
    current.controller.abort(); // stops a cancel still being retried
    for (const button of buttons) button.disabled = false;
    if (document.activeElement === cancel) (current.returnFocus || $("generate")).focus();
    cancel.disabled = true;
    current = null;
  }

  function progress(value, text) {
    if (value !== null) $("progress").value = value;
    $("progress-text").textContent = text;
  }

  function reconnecting() {
    const kept = current && current.cancelPending ? " The job will be canceled when reconnected." : "";
    progress(null, `Reconnecting to the server…${kept}`);
  }

  /** The server answered the follow: a cancel waiting to be sent again goes now. */
  function answered() {
    if (current && current.wakeCancel) current.wakeCancel();
  }

  function showStatus(job) {
    if (current) current.status = job.status;
    if (job.status === "queued") progress(0, "Queued");
    else if (job.status === "processing") progress(job.progress, "Running");
    else if (job.status === "succeeded") progress(1, "Done");
    else if (job.status === "canceled") progress(null, "Canceled");
    else if (job.status === "failed") progress(null, "Failed");
  }

  /** Follow a job until it ends: its events, and when the stream breaks (a restart, a dropped connection)
   * polls, retried with a growing wait for as long as the server does not answer. Only a 4xx ends it early.
   * A stream refused because the key holds all it may (429 too_many_streams) is not asked for again: the
   * rest of the job is polled. */
  async function follow(job, signal) {
    let last = job;
    let retryMs = RETRY_FIRST_MS;
    let streams = true;
    const onEvent = (kind, data) => {
      answered();
      if (kind === "status") {
        last = data;
        showStatus(data);
      } else if (kind === "progress") {
        progress(data.progress, `Step ${data.step} of ${data.steps}`);
      }
    };
    while (!isTerminal(last)) {
      if (streams) {
        try {
          await api.followEvents(job.id, onEvent, signal);
        } catch (error) {
          if (!isTransient(error)) throw error;
          if (error.code === "too_many_streams") streams = false;
        }
        if (isTerminal(last)) break;
      }
      await sleep(POLL_MS, signal);
      try {
        last = await api.getJob(job.id, signal);
        showStatus(last);
        answered();
        retryMs = RETRY_FIRST_MS;
      } catch (error) {
        if (!isTransient(error)) throw error;
        if (error.status === 429 && Number.isFinite(error.retryAfter)) {
          await sleep(error.retryAfter * 1000, signal); // it answered, and said how long to wait
          continue;
        }
        reconnecting();
        await sleep(retryMs, signal);
        retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
      }
    }
    return last;
  }

  /** Cancel the followed job. While the server does not answer, the cancel is kept and sent again (with the
   * follow's backoff, and at once when the follow reaches the server) until it is answered or the job ends.
   * A refusal (4xx: the job has ended already, or is gone) is no error: the job's own state is shown. */
  async function sendCancel(id) {
    const followed = current;
    if (followed.cancelPending) return; // already on its way
    followed.cancelPending = true;
    progress(null, "Canceling");
    const { signal } = followed.controller;
    let retryMs = RETRY_FIRST_MS;
    try {
      for (;;) {
        try {
          await api.cancelJob(id, signal);
          if (!isTerminal(followed)) progress(null, "Canceling"); // in place of a reconnecting notice
          return;
        } catch (error) {
          if (!isTransient(error)) {
            if (error.name !== "AbortError") showStateOf(followed, id);
            return;
          }
        }
        reconnecting();
        await new Promise((resolve, reject) => {
          followed.wakeCancel = resolve;
          sleep(retryMs, signal).then(resolve, reject);
        });
        followed.wakeCancel = null;
        retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
      }
    } catch {
      // aborted: the job has ended
    } finally {
      followed.cancelPending = false;
    }
  }

  async function showStateOf(followed, id) {
    try {
      const job = await api.getJob(id, followed.controller.signal);
      if (current === followed) showStatus(job);
    } catch (error) {
      if (current === followed && isTransient(error)) reconnecting(); // the follow says what became of it
    }
  }

  /** Follow a submitted (or resumed) job to its end; `current` is set. */
  async function track(job) {
    current.id = job.id;
    sessionStorage.setItem(FOLLOWED_JOB, job.id);
    showStatus(job);
    if (onSubmitted) onSubmitted(job);
    if (current.cancelRequested) sendCancel(job.id); // Cancel was pressed while the job was being submitted
    const done = await follow(job, current.controller.signal);
    sessionStorage.removeItem(FOLLOWED_JOB);
    if (done.status === "failed") {
      const { message, hint } = done.error || {};
      $("generate-error").textContent = `The job failed: ${message || "no message"}${hint ? ` (${hint})` : ""}`;
    }
    onDone(done);
  }

  async function run(kind, input) {
    if (current) return;
    clearErrors();
    begin();
    progress(0, "Submitting");
    const submission = { kind, input, idempotencyKey: newIdempotencyKey() };
    const submitting = (current.submitting = new AbortController());
    current.controller.signal.addEventListener("abort", () => submitting.abort());
    const { signal } = submitting;
    try {
      await track(await api.submitJob(CAMERA_MODEL, kind, input, { ...submission, signal }));
    } catch (error) {
      if (error.name === "AbortError" && current.cancelRequested && !current.id) {
        progress(0, "Canceled");
        withdraw(submission);
      } else {
        failed(error);
      }
    } finally {
      end();
    }
  }

  /** Wait for `ready` (the upload a button was pressed during) as for a job: said, with Cancel, which
   * abandons the wait. Resolves to what `ready` gives, or false when abandoned: nothing is to be sent. */
  async function waitFor(ready) {
    if (current) return false;
    begin();
    progress(0, "Waiting for the upload…");
    const followed = current;
    const abandoned = new Promise((resolve) => {
      followed.abandonWait = () => resolve(false);
      followed.controller.signal.addEventListener("abort", () => resolve(false)); // another key
    });
    try {
      const ok = await Promise.race([ready, abandoned]);
      progress(0, followed.cancelRequested ? "Canceled" : "");
      return ok && !followed.cancelRequested;
    } finally {
      end();
    }
  }

  /** Cancel pressed before the server answered the submission: the request was abandoned, but the server may
   * have made the job. The same submission sent again (the same Idempotency-Key) gets that job, or makes it,
   * and it is canceled at once; the history then shows it. */
  async function withdraw({ kind, input, idempotencyKey }) {
    try {
      const job = await api.submitJob(CAMERA_MODEL, kind, input, { idempotencyKey });
      if (!isTerminal(job)) await api.cancelJob(job.id);
    } catch {
      // refused (it ended meanwhile) or no answer: the history says what became of it
    }
    if (onSubmitted) onSubmitted();
  }

  /** Follow again the job this tab followed before a reload, if there is one: until it ends, with Cancel. */
  async function resume() {
    const id = sessionStorage.getItem(FOLLOWED_JOB);
    if (!id || current) return;
    begin();
    progress(null, `Following job ${id} again`);
    try {
      await track({ id, status: "unknown" });
    } catch (error) {
      failed(error);
    } finally {
      end();
    }
  }

  function failed(error) {
    progress(0, "");
    sessionStorage.removeItem(FOLLOWED_JOB); // refused (a 4xx): it is gone, or not this key's; or forgotten
    if (error.name !== "AbortError") showError(error);
  }

  /** Stop following the job (it runs on): it is another key's now. */
  function forget() {
    sessionStorage.removeItem(FOLLOWED_JOB);
    if (current) current.controller.abort();
  }

  cancel.addEventListener("click", () => {
    if (!current) return;
    current.cancelRequested = true;
    if (current.id) sendCancel(current.id);
    else if (current.submitting) current.submitting.abort(); // not answered yet: the page is free at once
    else if (current.abandonWait) current.abandonWait();
    else progress(null, "Canceling");
  });

  return { run, waitFor, resume, forget, get running() { return current !== null; } };
}

/** A random Idempotency-Key (crypto.randomUUID needs a secure context: not a server on a LAN address). */
function newIdempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `studio-${[...bytes].map((byte) => byte.toString(16).padStart(2, "0")).join("")}`;
}

function isTerminal(job) {
  return ["succeeded", "failed", "canceled"].includes(job.status);
}
