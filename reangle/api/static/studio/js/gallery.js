// What jobs made: the results gallery (pose and seed, download, use as input, before/after), the turntable
// of an orbit or path, and the history of the key's recent jobs.

const $ = (id) => document.getElementById(id);
const HISTORY_POLL_MS = 3000; // while a listed job is unfinished

function element(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

/** `result-job_123-0.png`, `turntable-job_123.webp`: the job's id keeps downloads of several jobs apart. */
function fileName(asset, jobId, index = null) {
  const suffix = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp" }[asset.mime_type] || "bin";
  const stem = asset.role === "image" ? "result" : asset.role.replace("_", "-");
  return `${stem}-${jobId}${index === null ? "" : `-${index}`}.${suffix}`;
}

/** The exact prompt the model got for an output ("<sks> right side view elevated shot close-up ..."). */
export function promptOf(asset) {
  if (asset.plan && asset.plan.prompt) return asset.plan.prompt;
  return asset.pose ? `azimuth ${asset.pose.azimuth_deg}°, elevation ${asset.pose.elevation_deg}°` : "";
}

/** How often an image that fails to load may have its links renewed (a link expires after an hour at least). */
export const RENEW_AFTER_ERROR_MS = 60000;

export function createGallery({ api, onUseAsInput }) {
  let inputUrl = null;
  // the job shown: its outputs (copies, whose links are renewed in place) and every element that uses a link,
  // as [element, attribute, output]
  let shown = null;
  let comparing = null; // the output in the before/after
  let renewal = null; // the shown job being read again: one read for all the links that fail at once

  function setInputUrl(url) {
    inputUrl = url;
  }

  function compare(asset) {
    comparing = asset;
    $("compare").hidden = !inputUrl;
    $("compare-before").src = inputUrl || "";
    $("compare-after").src = asset.url;
    $("compare-slider").value = "50";
    $("compare-after").style.clipPath = "inset(0 0 0 50%)";
  }
  $("compare-slider").addEventListener("input", () => {
    $("compare-after").style.clipPath = `inset(0 0 0 ${$("compare-slider").value}%)`;
  });
  $("compare-after").addEventListener("error", () => {
    if (comparing) renewAfterError(comparing);
  });
  $("turntable").addEventListener("error", () => {
    if (shown && shown.turntable) renewAfterError(shown.turntable);
  });

  /** An image of `asset` failed to load: its link may have expired. At most once a minute per output: a file
   * that fails from a fresh link too (gone) must not have the job read again and again. */
  function renewAfterError(asset) {
    if (Date.now() - (asset.renewedAfterErrorAt || 0) < RENEW_AFTER_ERROR_MS) return;
    asset.renewedAfterErrorAt = Date.now();
    renew(asset);
  }

  /** Fresh links for the shown job's outputs, before one is used: the links expire (REANGLE_URL_TTL_S) while
   * the page stays open, and the job read again carries newly signed ones. True once `asset.url` is fresh;
   * false, said in the results panel, when the job or the output is gone or the server does not answer. */
  async function renew(asset) {
    const job = shown;
    if (!job) return false;
    if (!renewal || renewal.job !== job) {
      const read = readAgain(job);
      renewal = { job, read };
      read.then(() => {
        if (renewal && renewal.read === read) renewal = null;
      });
    }
    if (!(await renewal.read) || shown !== job) return false;
    if (!asset.url) {
      $("results-error").textContent = `This output of job ${job.id} is no longer on the server.`;
      return false;
    }
    return true;
  }

  /** Read the shown job again and put its links in place (an element replaced would lose the keyboard focus);
   * an image whose link failed loads again, unless the link is the same. Never rejects. */
  async function readAgain(job) {
    let fresh;
    try {
      fresh = await api.getJob(job.id);
    } catch (error) {
      if (shown === job) {
        $("results-error").textContent = error.status === 404
          ? `Job ${job.id} is no longer on the server: its outputs can no longer be downloaded or used.`
          : `The links to the outputs could not be renewed (${error.message}).`;
      }
      return false;
    }
    if (shown !== job) return false;
    const urls = new Map(fresh.output.assets.map((asset) => [asset.id, asset.url]));
    for (const asset of job.assets) asset.url = urls.get(asset.id) ?? null;
    const uses = [...job.uses, ...(comparing ? [[$("compare-after"), "src", comparing]] : [])];
    for (const [node, attribute, asset] of uses) {
      if (asset.url && node.getAttribute(attribute) !== asset.url) node.setAttribute(attribute, asset.url);
    }
    $("results-error").textContent = "";
    return true;
  }

  /** `link` (an output's download link) followed with a fresh link: the one shown may have expired. */
  function downloading(link, asset) {
    let following = false;
    link.addEventListener("click", async (event) => {
      if (following) return; // the click below: the browser follows the fresh link
      event.preventDefault();
      if (!(await renew(asset))) return;
      following = true;
      link.click();
      following = false;
    });
    return link;
  }

  /** Show a job's outputs. A job without any (canceled, failed, unfinished) leaves the last ones shown. With
   * `compare` false (a job whose input is not the page's), no before/after. */
  function showJob(job, { compare: withInput = true } = {}) {
    const assets = (job.output ? job.output.assets : []).map((asset) => ({ ...asset }));
    const views = assets.filter((a) => a.role === "image" || a.role === "view");
    if (!views.length) return;
    const turntable = assets.find((a) => a.role === "turntable");
    shown = { id: job.id, assets, uses: [], turntable };
    comparing = null;
    $("results-error").textContent = "";
    const uses = (node, attribute, asset) => {
      shown.uses.push([node, attribute, asset]);
      return node;
    };
    const gallery = $("results");
    gallery.replaceChildren(
      ...views.map((asset, index) => {
        const label = promptOf(asset);
        const which = `output ${index + 1}`; // names each output's controls apart
        const use = element("button", {
          type: "button", text: "Use as input", "aria-label": `Use as input: ${which}`,
        });
        use.addEventListener("click", async () => {
          if (await renew(asset)) onUseAsInput(asset);
        });
        const before = element("button", {
          type: "button", text: "Before / after", "aria-label": `Before / after: ${which}`,
        });
        before.addEventListener("click", () => compare(asset));
        const image = element("img", { src: asset.url, alt: `Output ${index + 1}: ${label}` });
        image.addEventListener("error", () => renewAfterError(asset)); // shown again from a fresh link
        const link = element("a", {
          href: asset.url,
          download: fileName(asset, job.id, index),
          text: "Download",
          "aria-label": `Download: ${which}`,
        });
        return element("li", { class: "result" }, [
          uses(image, "src", asset),
          element("p", { class: "caption", text: `${label} · seed ${asset.seed ?? "?"}` }),
          element("p", { class: "row" }, [downloading(uses(link, "href", asset), asset), use, before]),
        ]);
      }),
    );
    $("turntable-box").hidden = !turntable;
    if (turntable) {
      $("turntable").src = turntable.url;
      uses($("turntable"), "src", turntable);
      const sheet = assets.find((a) => a.role === "contact_sheet");
      const link = (asset, text) => downloading(
        uses(element("a", { href: asset.url, download: fileName(asset, job.id), text }), "href", asset),
        asset,
      );
      $("turntable-links").replaceChildren(
        link(turntable, "Download turntable"),
        ...(sheet ? [link(sheet, "Contact sheet")] : []),
      );
    }
    if (job.kind === "edit" && withInput) compare(views[0]);
    else $("compare").hidden = true;
  }

  /** Nothing shown: another key's outputs are not this one's. */
  function clear() {
    $("results").replaceChildren();
    $("turntable-box").hidden = true;
    $("turntable").removeAttribute("src");
    $("compare").hidden = true;
    $("results-error").textContent = "";
    inputUrl = null;
    shown = null;
    comparing = null;
  }

  return { showJob, setInputUrl, clear };
}

/** The history list: recent jobs with status, a thumbnail and their settings; a click loads one back. While
 * any listed job is unfinished the list refreshes itself every few seconds, so its row ends as the job does. */
export function createHistory({ api, onLoad, showError, model }) {
  let timer = null;
  let asked = 0; // refreshes asked for: only the newest one's answer is shown
  const items = new Map(); // job id -> { node, job, thumbId }: kept across refreshes, updated in place

  async function refresh() {
    clearTimeout(timer);
    timer = null;
    $("history-error").textContent = "";
    const ask = ++asked;
    let page;
    try {
      page = await api.listJobs(20);
    } catch (error) {
      if (ask === asked) showError(error, "history");
      return;
    }
    if (ask !== asked) return;
    show(page.data);
    if (page.data.some((job) => job.status === "queued" || job.status === "processing")) {
      clearTimeout(timer); // another refresh may have started meanwhile: keep one timer
      timer = setTimeout(refresh, HISTORY_POLL_MS);
    }
  }

  /** The list as `jobs`, moving no row that stays: a row taken out of the page loses the keyboard focus. */
  function show(jobs) {
    const list = $("history");
    const wanted = jobs.map((job) => update(items.get(job.id) || item(job), job).node);
    const ids = new Set(jobs.map((job) => job.id));
    for (const id of items.keys()) if (!ids.has(id)) items.delete(id);
    for (const child of [...list.children]) if (!wanted.includes(child)) child.remove();
    wanted.forEach((node, index) => {
      if (list.children[index] !== node) list.insertBefore(node, list.children[index] || null);
    });
  }

  function item(job) {
    const button = element("button", { type: "button", class: "history-item", "data-job": job.id }, [
      element("span", { class: "no-thumb" }),
      element("span", { class: "status" }),
      element("span", { class: "settings" }),
    ]);
    const entry = { node: element("li", {}, [button]), job, thumbId: null };
    button.addEventListener("click", () => onLoad(entry.job));
    items.set(job.id, entry);
    return entry;
  }

  function update(entry, job) {
    entry.job = job;
    const button = entry.node.firstChild;
    const thumb = (job.output.assets || []).find((a) => a.role === "image" || a.role === "view");
    const thumbId = thumb && thumb.url ? thumb.id : null;
    if (thumbId !== entry.thumbId) { // the same output keeps its image: no download again for a fresh link
      entry.thumbId = thumbId;
      button.firstChild.replaceWith(
        thumbId ? element("img", { src: thumb.url, alt: "" }) : element("span", { class: "no-thumb" }),
      );
    }
    const status = button.querySelector(".status");
    status.textContent = job.status;
    status.className = `status status-${job.status}`;
    // a job of another model (made through the API) is named by it: the page can show it, not run it
    const what = job.model === model ? job.kind : `${job.model} ${job.kind}`;
    const settings = describe(job.input);
    button.querySelector(".settings").textContent = `${what}: ${settings}`;
    button.title = `${what}: ${settings}`; // the row shows a few lines of a long prompt
    const verb = job.model === model ? "Load" : "Show the outputs of";
    button.setAttribute("aria-label", `${verb} ${what} job ${job.id} (${job.status}): ${settings}`);
    return entry;
  }

  /** No rows and no refreshing: the jobs of a key no longer in use. */
  function clear() {
    asked += 1;
    clearTimeout(timer);
    timer = null;
    items.clear();
    $("history").replaceChildren();
    $("history-status").textContent = "";
  }

  $("refresh-history").addEventListener("click", refresh);
  return { refresh, clear };
}

/** A job's settings in a few words, in the fields it was given: the studio's `h 90° v 30° zoom 8`, the
 * API's `azimuth 90° elevation 30° distance 0.6`, an orbit's azimuths or its number of poses. */
export function describe(input) {
  const parts = [];
  if (input.poses) {
    parts.push(`${input.poses.length} poses`);
  } else if (input.azimuths) {
    const azimuths = input.azimuths.map((a) => `${a}°`).join(" ");
    parts.push(`azimuths ${azimuths} elevation ${input.elevation ?? 0}° distance ${input.distance ?? 1}`);
  } else {
    const axes = [
      ["h", input.horizontal_angle, "°"], ["azimuth", input.azimuth, "°"],
      ["v", input.vertical_angle, "°"], ["elevation", input.elevation, "°"],
      ["zoom", input.zoom, ""], ["distance", input.distance, ""],
    ];
    const given = axes.filter(([, value]) => value != null);
    if (given.length) parts.push(given.map(([name, value, unit]) => `${name} ${value}${unit}`).join(" "));
  }
  if (input.prompt) parts.push(`“${input.prompt}”`);
  if (input.seed != null) parts.push(`seed ${input.seed}`);
  return parts.join(", ") || "defaults";
}
