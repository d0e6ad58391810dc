// The studio page: wires the API client, the pose table, the 3D view and the panels together.
import { Api, RETRY_FIRST_MS, RETRY_MAX_MS, isTransient, sleep } from "./api.js";
import { PoseTable, ZOOM_DEFAULT, zoomOfDistance } from "./camera.js";
import { createCameraControls } from "./controls.js";
import { RENEW_AFTER_ERROR_MS, createGallery, createHistory } from "./gallery.js";
import {
  CAMERA_MODEL, clearErrors, createJobRunner, editInput, keyRefused, orbitCameras, orbitInput, showError,
} from "./jobs.js";
import { createPath } from "./path.js";
import {
  OPTION_IDS, cameraOfSaved, currentOptions, forgetSaved, readSaved, resetOptions, restoreOptions, writeSaved,
} from "./saved.js";
import { createScene } from "./scene.js";

const $ = (id) => document.getElementById(id);
const api = new Api();
let studio = null; // the panels, made once the pose table is in
let connecting = null; // the AbortController of the connect() under way
let healthAsked = false; // the health check: answered, or on its way

async function boot() {
  $("api-key").value = api.key;
  showDemoNotice();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key && api.key) forgetKey();
    else connect(key); // checked before it replaces the key in use
  });
  await connect();
}

async function showDemoNotice() {
  if (healthAsked) return;
  healthAsked = true;
  try {
    const health = await api.health();
    if (health.demo) {
      $("demo-notice").hidden = false;
      $("demo-notice").textContent = `Demo engine (${health.engine}): the images it makes are meaningless. `
        + "It is here to try the page; a server with the real model gives real pictures.";
    }
  } catch {
    healthAsked = false; // asked again once the server answers the key check
  }
}

/** Read the pose table with `key`: that checks the key, and starts the panels the first time. Until a key is
 * accepted the panels are inert (nothing in them could work without one) and say so. Another key replaces the
 * one in use (and clears its work) only once accepted. While the server does not answer (or answers 5xx) the
 * page says so and asks again, with a growing wait. */
async function connect(key = api.key) {
  if (connecting) connecting.abort(); // a key entered meanwhile: ask with that one instead
  const { signal } = (connecting = new AbortController());
  $("api-key-error").textContent = "";
  $("key-status").textContent = "";
  let poses;
  for (let retryMs = RETRY_FIRST_MS; !poses; retryMs = Math.min(retryMs * 2, RETRY_MAX_MS)) {
    try {
      poses = await api.poses(signal, key);
    } catch (error) {
      if (error.name === "AbortError") return;
      if (!isTransient(error)) {
        refused(error, key);
        return;
      }
      const why = error.status ? ` (${error.message})` : ""; // a 5xx's own words; a network error has none
      $("api-key-error").textContent = `Cannot reach the server at ${location.origin}${why}; retrying…`;
      $("key-status").textContent = "The panels open once it answers.";
      try {
        await sleep(retryMs, signal);
      } catch {
        return; // aborted
      }
    }
  }
  const authOff = !key || (await acceptsNoKey(signal));
  if (signal.aborted) return;
  if (key !== api.key) {
    api.setKey(key);
    if (studio) studio.forgetKey();
  }
  $("api-key-error").textContent = "";
  $("key-status").textContent = authOff ? "No key needed: this server runs without auth." : "Key accepted.";
  if (authOff) $("key-form").hidden = true;
  $("studio").inert = false;
  showDemoNotice();
  if (!studio) studio = start(new PoseTable(poses.data));
  studio.history.refresh();
}

/** Whether the server answers without a key too: a key kept from before is then not what let the page in.
 * /healthz says so; one that cannot (degraded, or an older server) is asked the keyless way. */
async function acceptsNoKey(signal) {
  try {
    const health = await api.request("GET", "/healthz", { signal, key: "" });
    if (health.auth === "on" || health.auth === "off") return health.auth === "off";
  } catch {
    // asked the keyless way below
  }
  try {
    await api.poses(signal, "");
    return true;
  } catch {
    return false;
  }
}

/** The key field sent empty: the kept key is forgotten (this browser keeps it no more), and with it what
 * belonged to it, as when another key is accepted; the panels are locked until a key is entered. */
function forgetKey() {
  if (connecting) connecting.abort();
  connecting = null;
  api.setKey("");
  if (studio) studio.forgetKey();
  $("api-key-error").textContent = "";
  $("key-status").textContent = "Key forgotten: this browser no longer keeps it. Enter a key to start again.";
  $("studio").inert = true;
}

/** A refused key (or no key where one is needed) locks the panels, unless it was meant to replace a key
 * that works: that one stays in use. Any other refusal is said as it is. */
function refused(error, key) {
  if (error.status === 401) {
    const text = key
      ? `The server refused this key: ${error.message}`
      : "This server needs an API key (make one with `reangle keys create`).";
    if (key !== api.key && studio && !$("studio").inert) {
      $("api-key-error").textContent = text;
      $("key-status").textContent = "Still using the key accepted before.";
    } else {
      keyRefused(text);
    }
  } else {
    $("api-key-error").textContent = error.message;
  }
}

function start(table) {
  const canvas = $("scene-canvas");
  const gestures = {};
  let scene = null;
  try {
    scene = createScene(canvas, gestures);
    scene.setSnapPoints(table.entries, (entry) => table.cameraOf(entry));
  } catch (error) {
    $("view-fallback").hidden = false;
    $("view-fallback").textContent = `The 3D view needs WebGL (${error.message}); the sliders still work.`;
  }
  const controls = createCameraControls({ table, scene, canvas, phrase: $("pose-phrase") });
  if (scene) $("reset-view").addEventListener("click", () => scene.resetView());
  else $("reset-view").hidden = true;
  const path = createPath({
    onChange: (entries) => {
      if (scene) scene.setPath(entries);
      keep();
    },
  });
  Object.assign(gestures, controls.sceneHandlers, {
    onPick: (entry) => (path.picking ? path.add(entry) : controls.set(table.cameraOf(entry))),
  });
  $("path-add").addEventListener("click", () => path.add(table.nearest(controls.camera)));

  const input = { assetId: null, label: "", url: null };
  // the form as the browser kept it; the input image comes back once the server has given a fresh link to it
  const saved = readSaved();
  let savedInput = saved.input && typeof saved.input.assetId === "string" ? saved.input : null;
  let keeping = false; // not before the kept form is back: it would be overwritten with the page's defaults
  function keep() {
    if (!keeping) return;
    writeSaved({
      options: currentOptions(),
      camera: controls.camera,
      path: path.entries.map((entry) => table.cameraOf(entry)),
      input: input.assetId ? { assetId: input.assetId, label: input.label } : savedInput,
    });
  }
  function clearInput() {
    input.assetId = null;
    input.label = "";
    input.url = null;
    savedInput = null;
    $("input-preview").hidden = true;
    $("input-preview").removeAttribute("src");
    $("input-status").textContent = "";
    if (scene) scene.setImage(null);
    keep();
  }
  function useInput(assetId, url, label) {
    input.assetId = assetId;
    input.label = label;
    input.url = url;
    savedInput = null;
    $("input-preview").src = url;
    $("input-preview").hidden = false;
    $("input-preview").alt = `Input image: ${label}`;
    $("input-status").textContent = `Input: ${label}`;
    $("images-error").textContent = "";
    gallery.setInputUrl(url);
    if (scene) scene.setImage(url);
    keep();
  }
  async function restoreInput(kept) {
    try {
      const asset = await api.getAsset(kept.assetId);
      if (savedInput === kept) useInput(asset.id, asset.url, kept.label);
    } catch (error) {
      if (savedInput !== kept) return; // another image was brought meanwhile
      if (error.status === 404) {
        savedInput = null;
        keep();
        $("input-status").textContent = "The image of last time is no longer on the server: bring it again.";
      } else {
        $("input-status").textContent = `The image of last time could not be loaded (${error.message}).`;
      }
    }
  }

  /** The input image's link, asked for again when an image of it fails: one shown long after it was read (in
   * the before/after) may have expired while the page stayed open. */
  let inputRenewedAt = 0;
  async function renewInput(event) {
    const failed = event.target.getAttribute("src");
    const { assetId } = input;
    if (!assetId || failed !== input.url) return; // a file of this browser's, or no longer the input
    // at most once a minute: a file that fails from a fresh link too (gone) is not asked for again and again
    if (Date.now() - inputRenewedAt < RENEW_AFTER_ERROR_MS) return;
    inputRenewedAt = Date.now();
    try {
      const asset = await api.getAsset(assetId);
      if (input.assetId !== assetId || asset.url === failed) return; // another input, or no fresher link
      input.url = asset.url;
      for (const id of ["input-preview", "compare-before"]) {
        if ($(id).getAttribute("src") === failed) $(id).src = asset.url;
      }
      gallery.setInputUrl(asset.url);
    } catch (error) {
      if (input.assetId !== assetId) return;
      $("input-status").textContent = error.status === 404
        ? "The input image is no longer on the server: bring it again."
        : `The input image could not be shown again (${error.message}).`;
    }
  }
  const gallery = createGallery({
    api,
    onUseAsInput: (asset) => useInput(asset.id, asset.url, `a result (${asset.id})`),
  });
  for (const id of ["input-preview", "compare-before"]) $(id).addEventListener("error", renewInput);
  const runner = createJobRunner({
    api,
    onSubmitted: () => history.refresh(),
    onDone: (job) => {
      gallery.showJob(job);
      history.refresh();
    },
  });
  const history = createHistory({
    api,
    showError,
    model: CAMERA_MODEL,
    onLoad: (job) => loadJob(job, { table, controls, path, gallery, useInput, keep }),
  });

  // a failed upload keeps the image before it, and says so (and why): that is the one Generate uses
  const keptInput = (error) => {
    if (!input.assetId) return "";
    const why = error.status >= 400 && error.status < 500 ? "was refused" : "could not be sent";
    return `Input: ${input.label} (kept: the new file ${why})`;
  };
  const uploads = createUploads(useInput, keptInput);
  setUpUpload(uploads.upload);
  const needsInput = () => {
    if (input.assetId) return false;
    clearErrors();
    $("images-error").textContent = "Bring an image first: choose, drop or paste one.";
    return true;
  };
  /** Run a job of the form's input, or show why the form cannot make one (a field the page refuses). */
  function submit(kind, makeInput) {
    let request;
    try {
      request = makeInput();
    } catch (error) {
      clearErrors();
      showError(error);
      return;
    }
    runner.run(kind, request);
  }
  /** A click handler that runs `then` with the input image: a click during an upload waits for its image,
   * said as a job's wait is, and Cancel abandons it. */
  const withInput = (then) => async () => {
    const ready = uploads.pending ? runner.waitFor(uploads.settled()) : true;
    if ((await ready) && !needsInput()) then();
  };
  $("generate").addEventListener("click", withInput(() => {
    submit("edit", () => editInput(input.assetId, controls.camera));
  }));
  $("orbit").addEventListener("click", withInput(() => {
    submit("orbit", () => orbitInput(input.assetId, orbitCameras(controls.camera)));
  }));
  $("render-path").addEventListener("click", withInput(() => {
    if (path.entries.length < 2) {
      clearErrors();
      $("generate-error").textContent = "Pick at least 2 poses for a path.";
      return;
    }
    submit("orbit", () => orbitInput(input.assetId, path.entries.map((e) => table.cameraOf(e))));
  }));
  $("dice").addEventListener("click", () => {
    $("seed").value = String(Math.floor(Math.random() * 2 ** 31));
    keep();
  });

  restoreOptions(saved.options);
  controls.set(cameraOfSaved(saved.camera));
  if (Array.isArray(saved.path)) {
    const fallback = { horizontal: 0, vertical: 0, zoom: ZOOM_DEFAULT };
    path.set(saved.path.map((camera) => table.nearest({ ...fallback, ...cameraOfSaved(camera) })));
  }
  keeping = true;
  if (savedInput) restoreInput(savedInput);
  controls.onChange(keep);
  for (const id of OPTION_IDS) {
    $(id).addEventListener("input", keep);
    $(id).addEventListener("change", keep);
  }

  window.studio = { table, controls, path, scene: scene && scene.debug };
  document.body.dataset.ready = "true";
  runner.resume(); // a job this tab followed before a reload
  /** Another key: the image, results, followed job, history and kept form of the one before are not this
   * one's. */
  function forgetKey() {
    uploads.abort();
    runner.forget();
    clearInput();
    gallery.clear();
    history.clear();
    resetOptions();
    controls.set({ horizontal: 0, vertical: 0, zoom: ZOOM_DEFAULT });
    path.set([]);
    forgetSaved();
  }
  return { history, forgetKey };
}

function setUpUpload(onFile) {
  const zone = $("drop-zone");
  // one visible control: the native input (which would go on saying "No file chosen") stays hidden
  $("choose-file").addEventListener("click", () => $("file-input").click());
  $("file-input").addEventListener("change", () => {
    const [file] = $("file-input").files;
    if (file) onFile(file);
    $("file-input").value = "";
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const [file] = event.dataTransfer.files;
    if (file) onFile(file);
  });
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData?.files || [])][0];
    if (file) {
      event.preventDefault();
      onFile(file);
    }
  });
}

/** Uploads: the newest file chosen wins (one chosen before it is aborted), and `settled()` waits for it. */
function createUploads(useInput, keptInput) {
  let newest = null; // { controller, done }: the upload under way, done resolving to whether it is the input

  function upload(file) {
    if (newest) newest.controller.abort();
    clearErrors();
    $("input-status").textContent = `Uploading ${file.name || "the image"}…`;
    const controller = new AbortController();
    const mine = { controller, done: null };
    newest = mine;
    mine.done = (async () => {
      try {
        const asset = await api.upload(file, controller.signal);
        if (controller.signal.aborted) return false;
        const label = `${file.name || "pasted image"} (${asset.width}x${asset.height})`;
        useInput(asset.id, URL.createObjectURL(file), label);
        return true;
      } catch (error) {
        if (error.name === "AbortError" || controller.signal.aborted) return false;
        $("input-status").textContent = keptInput(error);
        showError(error, "images");
        return false;
      } finally {
        if (newest === mine) newest = null;
      }
    })();
  }

  /** Whether the input may be used now: after the newest upload, true unless it was refused or aborted. */
  async function settled() {
    let ok = true;
    while (newest) ok = await newest.done;
    return ok;
  }

  function abort() {
    if (newest) newest.controller.abort();
    newest = null;
  }

  return { upload, settled, abort, get pending() { return newest !== null; } };
}

/** A job from the history back in the editor: its input image, camera (or path), prompt and options. */
async function loadJob(job, { table, controls, path, gallery, useInput, keep }) {
  $("history-status").textContent = "";
  if (job.model !== CAMERA_MODEL) {
    // its fields are another model's: loaded as a camera edit they would say something else
    gallery.showJob(job, { compare: false });
    $("history-status").textContent = `Job ${job.id} is of the model ${job.model}: its outputs are shown, `
      + "but the studio makes camera edits only, so its settings are not loaded.";
    return;
  }
  const input = job.input;
  const assetId = input.image || (input.images && input.images[0]);
  if (assetId && assetId.startsWith("asset_")) {
    try {
      const asset = await api.getAsset(assetId);
      useInput(asset.id, asset.url, `from job ${job.id} (${asset.width}x${asset.height})`);
    } catch (error) {
      showError(error, "images");
    }
  }
  // either style of camera fields, one per axis; an axis given by neither is the API's default
  const cameraOf = (fields) => ({
    horizontal: fields.horizontal_angle ?? fields.azimuth ?? 0,
    vertical: fields.vertical_angle ?? fields.elevation ?? 0,
    zoom: fields.zoom ?? (fields.distance != null ? zoomOfDistance(fields.distance) : ZOOM_DEFAULT),
  });
  const views = input.poses
    || (input.azimuths || []).map((azimuth) => ({ azimuth, elevation: input.elevation, distance: input.distance }));
  if (job.kind === "orbit" && views.length) {
    const cameras = views.map(cameraOf);
    path.set(cameras.map((camera) => table.nearest(camera)));
    controls.set(cameras[0]);
  } else if (job.kind === "edit") {
    controls.set(cameraOf(input));
  }
  $("prompt").value = input.prompt || "";
  const fields = {
    acceleration: input.acceleration || "high",
    steps: input.num_inference_steps ?? "",
    guidance: input.guidance_scale ?? "",
    "lora-scale": input.lora_scale ?? 1,
    seed: input.seed ?? "",
    "num-outputs": input.num_outputs ?? 1,
    "aspect-ratio": input.aspect_ratio || "",
    width: input.width ?? "",
    height: input.height ?? "",
    "output-format": input.output_format || "png",
  };
  for (const [id, value] of Object.entries(fields)) $(id).value = String(value);
  keep();
  gallery.showJob(job);
}

boot();
