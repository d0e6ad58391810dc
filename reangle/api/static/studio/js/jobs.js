// Running jobs: the request from the form, submit, live progress from the job's events, cancel, and every
// error shown next to the control that caused it.
import { round } from "./camera.js";

export const CAMERA_MODEL = "qwen-edit-multiangle-2511";
const ORBIT_AZIMUTHS = [0, 45, 90, 135, 180, 225, 270, 315];
const POLL_MS = 500;

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

const $ = (id) => document.getElementById(id);

/** The advanced panel's values that differ from the API's defaults, as input fields. */
export function readOptions() {
  const options = {};
  const number = (id) => ($(id).value === "" ? null : Number($(id).value));
  const prompt = $("prompt").value.trim();
  if (prompt) options.prompt = prompt;
  if ($("acceleration").value !== "high") options.acceleration = $("acceleration").value;
  const fields = {
    num_inference_steps: number("steps"),
    guidance_scale: number("guidance"),
    seed: number("seed"),
    width: number("width"),
    height: number("height"),
  };
  for (const [name, value] of Object.entries(fields)) if (value !== null) options[name] = value;
  if (number("lora-scale") !== null && number("lora-scale") !== 1) options.lora_scale = number("lora-scale");
  if ($("aspect-ratio").value) options.aspect_ratio = $("aspect-ratio").value;
  if ($("output-format").value !== "png") options.output_format = $("output-format").value;
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
  const options = readOptions();
  const outputs = Number($("num-outputs").value || 1);
  if (outputs !== 1) options.num_outputs = outputs;
  return { images: [assetId], ...cameraFields(camera), ...options };
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

/** Put an API error next to its control: 422 by field, 401 by the key, 429 with its wait, else by `fallback`. */
export function showError(error, fallback = "generate") {
  let target = fallback;
  let text = error.message;
  if (error.status === 401) {
    $("api-key-error").textContent = `${error.message}: enter a valid API key`;
    text = "The server refused the API key.";
  } else if (error.status === 422 && CONTROL_OF_FIELD[error.field]) {
    target = CONTROL_OF_FIELD[error.field];
  } else if (error.status === 429) {
    const wait = error.retryAfter === null ? "" : ` Try again in ${error.retryAfter} s.`;
    text = `${error.message}.${wait}`;
  }
  const line = $(`${target}-error`);
  line.textContent = text;
  const control = $(target === "images" ? "drop-zone" : target);
  if (control && target !== fallback) {
    control.setAttribute("aria-invalid", "true");
    const advanced = control.closest("details");
    if (advanced) advanced.open = true;
  }
}

/** Submits jobs one at a time, follows them, and hands finished ones to `onDone(job)`. */
export function createJobRunner({ api, onDone }) {
  let current = null;
  const buttons = ["generate", "orbit", "render-path"].map($);

  function busy(on) {
    for (const button of buttons) button.disabled = on;
    $("cancel").disabled = !on;
  }

  function progress(value, text) {
    if (value !== null) $("progress").value = value;
    $("progress-text").textContent = text;
  }

  function showStatus(job) {
    if (job.status === "queued") progress(0, "Queued");
    else if (job.status === "processing") progress(job.progress, "Running");
    else if (job.status === "succeeded") progress(1, "Done");
    else if (job.status === "canceled") progress(null, "Canceled");
    else if (job.status === "failed") progress(null, "Failed");
  }

  async function follow(job, signal) {
    let last = job;
    try {
      await api.followEvents(
        job.id,
        (kind, data) => {
          if (kind === "status") {
            last = data;
            showStatus(data);
          } else if (kind === "progress") {
            progress(data.progress, `Step ${data.step} of ${data.steps}`);
          }
        },
        signal,
      );
    } catch (error) {
      if (error.name === "AbortError") throw error;
    }
    while (!["succeeded", "failed", "canceled"].includes(last.status)) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS)); // the stream broke: poll
      last = await api.getJob(job.id);
      showStatus(last);
    }
    return last;
  }

  async function run(kind, input) {
    if (current) return;
    clearErrors();
    const controller = new AbortController();
    current = { id: null, controller };
    busy(true);
    progress(0, "Submitting");
    try {
      const job = await api.submitJob(CAMERA_MODEL, kind, input);
      current.id = job.id;
      showStatus(job);
      const done = await follow(job, controller.signal);
      if (done.status === "failed") {
        const { message, hint } = done.error || {};
        $("generate-error").textContent = `The job failed: ${message || "no message"}${hint ? ` (${hint})` : ""}`;
      }
      onDone(done);
    } catch (error) {
      progress(0, "");
      if (error.name !== "AbortError") showError(error);
    } finally {
      current = null;
      busy(false);
    }
  }

  $("cancel").addEventListener("click", async () => {
    if (!current || !current.id) return;
    progress(null, "Canceling");
    try {
      await api.cancelJob(current.id);
    } catch (error) {
      showError(error);
    }
  });

  return { run, get running() { return current !== null; } };
}
