// The form kept for this browser (local storage), so that a reload brings it back: the prompt, the settings
// panel's options, the camera, the path's poses and the input image (by asset id; its link is asked anew).

const STORAGE = "reangle.form";
/** The prompt and the settings panel's controls, by id. */
export const OPTION_IDS = [
  "prompt", "acceleration", "steps", "guidance", "lora-scale", "seed", "num-outputs", "aspect-ratio", "width",
  "height", "output-format",
];

const $ = (id) => document.getElementById(id);

/** What was kept: { options, camera, path: [camera], input: { assetId, label } }; any part may be missing. */
export function readSaved() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORAGE) || "{}");
    return saved && typeof saved === "object" ? saved : {};
  } catch {
    return {}; // written by another version of the page: start afresh
  }
}

export function writeSaved(saved) {
  try {
    localStorage.setItem(STORAGE, JSON.stringify(saved));
  } catch {
    // storage full or turned off: the form just is not kept
  }
}

export function forgetSaved() {
  localStorage.removeItem(STORAGE);
}

/** The options as kept; a value a control cannot take (a choice no longer offered) is left out. */
export function restoreOptions(options = {}) {
  for (const id of OPTION_IDS) {
    const value = options[id];
    if (typeof value !== "string") continue;
    const control = $(id);
    const choices = control.tagName === "SELECT" ? [...control.options].map((option) => option.value) : null;
    if (!choices || choices.includes(value)) control.value = value;
  }
}

/** The options as the page first shows them. */
export function resetOptions() {
  for (const id of OPTION_IDS) {
    const control = $(id);
    if (control.tagName === "SELECT") {
      const first = [...control.options].find((option) => option.defaultSelected) || control.options[0];
      control.value = first.value;
    } else {
      control.value = control.defaultValue;
    }
  }
}

export function currentOptions() {
  return Object.fromEntries(OPTION_IDS.map((id) => [id, $(id).value]));
}

/** A kept camera's axes that are numbers. */
export function cameraOfSaved(camera) {
  if (!camera || typeof camera !== "object") return {};
  const axes = ["horizontal", "vertical", "zoom"].filter((axis) => Number.isFinite(camera[axis]));
  return Object.fromEntries(axes.map((axis) => [axis, camera[axis]]));
}
