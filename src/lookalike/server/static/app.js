// lookalike web page: plain JavaScript over the JSON API (no build step, nothing remote).
// Every piece of text from the server goes through textContent, never innerHTML.
"use strict";

const $ = (id) => document.getElementById(id);
const BROWSE_PAGE = 60;
// The query on screen: {kind: "upload", file} | {kind: "item", id, path} | {kind: "browse", offset}.
let current = null;
let busy = 0;
let maxUploadBytes = null; // from /api/info: refuse here rather than upload in vain

function basename(path) {
  return String(path).split(/[\\/]/).pop();
}

function bytes(n) {
  if (n >= 1048576) return `${(n / 1048576).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} bytes`;
}

async function api(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    throw new Error(`cannot reach the server (${err.message})`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const reason = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    throw new Error(reason);
  }
  return body;
}

function showError(message) {
  const box = $("error");
  box.textContent = message ? `Error: ${message}` : "";
  box.hidden = !message;
}

function setBusy(delta) {
  busy += delta;
  document.body.classList.toggle("busy", busy > 0);
  for (const id of ["search", "browse", "more"]) $(id).disabled = busy > 0;
}

function options() {
  return { k: $("k").value, where: $("where").value.trim(), descriptor: $("descriptor").value };
}

function thumbnailUrl(id, size = 320) {
  return `/api/items/${encodeURIComponent(id)}/thumbnail?size=${size}`;
}

function showQuery(src, caption) {
  $("query").hidden = false;
  $("query-image").src = src;
  $("query-caption").textContent = caption;
}

function card(item, rank, distance) {
  const figure = document.createElement("figure");
  figure.className = "hit";
  figure.dataset.id = item.id;
  const button = document.createElement("button");
  button.type = "button";
  button.title = `${item.path}\nclick: find images like this one`;
  const thumb = document.createElement("div");
  thumb.className = "thumb";
  const img = document.createElement("img");
  img.loading = "lazy";
  img.alt = basename(item.path);
  img.src = thumbnailUrl(item.id);
  thumb.appendChild(img);
  const caption = document.createElement("figcaption");
  const head = document.createElement("span");
  if (rank !== null) {
    const r = document.createElement("span");
    r.className = "rank";
    r.textContent = `#${rank} `;
    head.appendChild(r);
  }
  if (distance !== null) {
    const d = document.createElement("span");
    d.className = "distance";
    d.textContent = Number(distance).toFixed(4);
    head.appendChild(d);
  }
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = basename(item.path);
  caption.append(head, name);
  const tags = item.metadata && Array.isArray(item.metadata.tags) ? item.metadata.tags : [];
  if (tags.length) {
    const t = document.createElement("span");
    t.className = "tags";
    t.textContent = tags.slice(0, 3).join(", ");
    caption.appendChild(t);
  }
  button.append(thumb, caption);
  button.addEventListener("click", () => searchItem(item.id, item.path));
  figure.appendChild(button);
  return figure;
}

function showHits(result, started) {
  const grid = $("results");
  grid.replaceChildren(...result.results.map((hit, i) => card(hit, i + 1, hit.distance)));
  const ms = Math.round(performance.now() - started);
  $("status").textContent = result.results.length
    ? `${result.results.length} results for ${basename(result.query)} in ${ms} ms`
    : `no results for ${basename(result.query)} (is the filter too narrow?)`;
  $("more").hidden = true;
}

async function run(task) {
  showError("");
  setBusy(+1);
  try {
    await task();
  } catch (err) {
    showError(err.message);
  } finally {
    setBusy(-1);
  }
}

function searchUpload(file) {
  current = { kind: "upload", file };
  showQuery(URL.createObjectURL(file), `query: ${file.name || "pasted image"}`);
  return run(async () => {
    if (maxUploadBytes !== null && file.size > maxUploadBytes) {
      throw new Error(`${file.name}: ${bytes(file.size)} is over the upload limit of ${bytes(maxUploadBytes)}`);
    }
    const opts = options();
    const form = new FormData();
    form.append("file", file, file.name || "pasted.png");
    form.append("k", opts.k);
    form.append("where", opts.where);
    form.append("descriptor", opts.descriptor);
    const started = performance.now();
    $("results").replaceChildren();
    $("status").textContent = "searching…";
    showHits(await api("/api/search", { method: "POST", body: form }), started);
  });
}

function searchItem(id, path) {
  current = { kind: "item", id, path };
  showQuery(thumbnailUrl(id), `query: item ${id} · ${basename(path)}`);
  return run(async () => {
    const opts = options();
    const params = new URLSearchParams({ k: opts.k, where: opts.where, descriptor: opts.descriptor });
    const started = performance.now();
    $("status").textContent = "searching…";
    showHits(await api(`/api/items/${encodeURIComponent(id)}/similar?${params}`), started);
    window.scrollTo({ top: 0, behavior: "smooth" });
  });
}

function browse(offset = 0) {
  current = { kind: "browse", offset };
  $("query").hidden = true;
  return run(async () => {
    const where = options().where;
    const params = new URLSearchParams({ where, limit: BROWSE_PAGE, offset });
    const page = await api(`/api/items?${params}`);
    const cards = page.items.map((item) => card(item, null, null));
    if (offset === 0) $("results").replaceChildren(...cards);
    else $("results").append(...cards);
    const shown = offset + page.items.length;
    $("status").textContent = page.total
      ? `items ${where ? `matching ${where} ` : ""}1–${shown} of ${page.total}; click one to search with it`
      : `no items match ${where || "(no filter)"}`;
    $("more").hidden = shown >= page.total;
  });
}

function rerun() {
  if (!current) return browse(0);
  if (current.kind === "upload") return searchUpload(current.file);
  if (current.kind === "item") return searchItem(current.id, current.path);
  return browse(0);
}

function pickFile(files) {
  const file = files && files[0];
  if (!file) return;
  searchUpload(file);
}

async function loadInfo() {
  try {
    const info = await api("/api/info");
    const keys = Object.keys(info.descriptors);
    const select = $("descriptor");
    select.replaceChildren();
    for (const key of keys) {
      const option = document.createElement("option");
      option.value = key === info.default_descriptor ? "" : key;
      option.textContent = `${key} (${info.descriptors[key].spec})`;
      if (key === info.default_descriptor) select.prepend(option);
      else select.appendChild(option);
    }
    if (info.server && info.server.max_upload_bytes) maxUploadBytes = info.server.max_upload_bytes;
    if (info.server && info.server.fused) {
      const option = document.createElement("option");
      option.value = info.server.fused;
      option.textContent = "all, fused";
      select.appendChild(option);
    }
    select.value = "";
    select.parentElement.hidden = keys.length < 2;
    $("collection-info").textContent =
      `${info.name}: ${info.items} images` + (info.errors ? ` (${info.errors} unreadable)` : "");
  } catch (err) {
    $("collection-info").textContent = "";
    showError(err.message);
  }
}

function setUp() {
  const zone = $("drop-zone");
  $("file-input").addEventListener("change", (event) => {
    pickFile(event.target.files);
    event.target.value = ""; // picking the same file again still fires "change"
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      $("file-input").click();
    }
  });
  // Dropping anywhere on the page searches instead of navigating away to the file.
  for (const type of ["dragenter", "dragover"]) {
    document.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  document.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) zone.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    pickFile(event.dataTransfer && event.dataTransfer.files);
  });
  document.addEventListener("paste", (event) => {
    const items = event.clipboardData ? Array.from(event.clipboardData.files) : [];
    if (items.length) pickFile(items);
  });
  $("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    rerun();
  });
  $("browse").addEventListener("click", () => browse(0));
  $("more").addEventListener("click", () => browse((current && current.offset || 0) + BROWSE_PAGE));
  $("k").addEventListener("change", () => current && current.kind !== "browse" && rerun());
  $("descriptor").addEventListener("change", () => current && current.kind !== "browse" && rerun());
  loadInfo();
}

setUp();
