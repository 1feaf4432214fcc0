"use strict";
// The web page: choose or drop an image, preview it, classify it, toggle the heatmap overlay.
(() => {
  const $ = (id) => document.getElementById(id);
  let current = null; // the chosen File
  let generation = 0; // responses for an older choice are ignored
  let overlayUrl = null;
  let previewUrl = null;

  function authHeaders() {
    const key = $("api-key").value.trim();
    return key ? { "X-API-Key": key } : {};
  }

  async function send(path, file, accept) {
    const body = new FormData();
    body.append("file", file);
    const res = await fetch(path, { method: "POST", body, headers: { ...authHeaders(), Accept: accept } });
    if (!res.ok) {
      let message = `HTTP ${res.status}`;
      try {
        const err = await res.json();
        message = err.detail || err.error || message;
      } catch (_) { /* not JSON */ }
      throw new Error(message);
    }
    return res;
  }

  function showError(message) {
    $("error").textContent = message || "";
    $("error").hidden = !message;
  }

  function percent(p) {
    return `${(100 * p).toFixed(1)}%`;
  }

  function render(prediction) {
    // An abstained answer has no label: show why, never a label or its probabilities.
    $("abstained").hidden = !prediction.abstained;
    $("answer").hidden = prediction.abstained;
    $("result").dataset.label = prediction.label || "";
    const ood = prediction.ood;
    $("abstained-reason").textContent = ood
      ? `OOD score ${ood.score.toPrecision(4)} above the model's threshold ${ood.threshold.toPrecision(4)}.`
      : "";
    $("flagged").hidden = !ood || ood.in_distribution || prediction.abstained;
    $("label").textContent = prediction.label || "";
    $("probability").textContent = percent(prediction.probability);
    $("threshold").textContent = percent(prediction.threshold);
    const rows = $("probabilities").tBodies[0];
    rows.replaceChildren();
    const entries = Object.entries(prediction.probabilities).sort((a, b) => b[1] - a[1]);
    for (const [label, p] of entries) {
      const row = rows.insertRow();
      row.insertCell().textContent = label;
      const cell = row.insertCell();
      cell.textContent = percent(p);
      cell.className = "num";
      if (label === prediction.label) row.className = "chosen";
    }
    const t = prediction.timings;
    $("timing").textContent = `${t.total_ms.toFixed(1)} ms (decode ${t.decode_ms.toFixed(1)}, ` +
      `inference ${t.inference_ms.toFixed(1)}) · ${prediction.model.name} ${prediction.model.version}`;
    $("result").hidden = false;
  }

  function isDicom(file) {
    return file.type === "application/dicom" || /\.dcm$/i.test(file.name);
  }

  function showPreview(showOverlay) {
    // A browser cannot draw a DICOM file: only the heatmap overlay (the slice as the model saw it) shows.
    const dicom = current !== null && isDicom(current);
    $("overlay").hidden = !showOverlay;
    $("preview").hidden = showOverlay || dicom;
    $("no-preview").hidden = showOverlay || !dicom;
  }

  async function showHeatmap() {
    if (!current) return;
    const mine = generation;
    if (!overlayUrl) {
      $("heatmap-status").textContent = "Computing heatmap…";
      const res = await send("/v1/explain", current, "image/png");
      const blob = await res.blob();
      if (mine !== generation) return;
      overlayUrl = URL.createObjectURL(blob);
      $("overlay").src = overlayUrl;
      const label = res.headers.get("X-Label");
      $("heatmap-status").textContent = label
        ? `Heatmap of evidence for "${label}".`
        : "Heatmap of the model's evidence (no prediction is given for this image).";
    }
    if ($("heatmap-toggle").checked) showPreview(true);
  }

  async function choose(file) {
    if (!file) return;
    generation += 1;
    const mine = generation;
    current = file;
    showError("");
    $("result").hidden = true;
    $("heatmap-status").textContent = "";
    for (const url of [overlayUrl, previewUrl]) if (url) URL.revokeObjectURL(url);
    overlayUrl = null;
    previewUrl = URL.createObjectURL(file);
    $("preview").src = previewUrl;
    $("viewer").hidden = false;
    showPreview(false);
    try {
      const res = await send("/v1/predict", file, "application/json");
      const prediction = await res.json();
      if (mine !== generation) return;
      render(prediction);
      if ($("heatmap-toggle").checked) await showHeatmap();
    } catch (err) {
      if (mine === generation) showError(`Could not classify this image: ${err.message}`);
    }
  }

  async function loadModel() {
    try {
      const res = await fetch("/v1/model");
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const m = await res.json();
      $("model-info").textContent =
        `Model ${m.name} ${m.version} (${m.variant}) · classes: ${m.labels.join(", ")}`;
    } catch (_) {
      $("model-info").textContent = "Model information is unavailable.";
    }
  }

  $("file").addEventListener("change", (e) => choose(e.target.files[0]));
  $("heatmap-toggle").addEventListener("change", (e) => {
    if (!e.target.checked) {
      showPreview(false);
      return;
    }
    showHeatmap().catch((err) => {
      $("heatmap-status").textContent = "";
      showError(`Could not compute the heatmap: ${err.message}`);
    });
  });
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    choose(e.dataTransfer.files[0]);
  });
  loadModel();
})();
