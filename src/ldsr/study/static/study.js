// The rating page of `ldsr study serve`: join, then rate candidate vs reference with synchronised zoom/pan.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let trial = null;      // {position, trial, reference, candidate}
  let shownAt = 0;       // when the current trial became visible (ms)
  let busy = true;       // no rating while a trial loads or a rating is being saved
  const view = { s: 1, tx: 0, ty: 0 };  // one transform for both images: screen = (tx, ty) + s * image

  function status(text, error) {
    $("status").textContent = text;
    $("status").className = error ? "error" : "";
  }

  async function api(method, path, body) {
    const init = { method, headers: {}, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    return { ok: response.ok, status: response.status, data };
  }

  function show(section) {
    for (const id of ["join", "rate", "finished"]) $(id).hidden = id !== section;
  }

  function progress(state) {
    $("progress-box").hidden = false;
    $("progress").max = Math.max(state.total, 1);
    $("progress").value = state.done;
    $("progress-text").textContent = state.done + " / " + state.total;
    $("who").textContent = state.rater;
    document.body.dataset.done = String(state.done);
  }

  function apply() {
    const t = "translate(" + view.tx + "px," + view.ty + "px) scale(" + view.s + ")";
    $("img-ref").style.transform = t;
    $("img-cand").style.transform = t;
  }

  function fit() {
    const img = $("img-ref"), pane = $("view-ref");
    if (!img.naturalWidth) return;
    const w = pane.clientWidth, h = pane.clientHeight;
    view.s = Math.min(w / img.naturalWidth, h / img.naturalHeight);
    view.tx = (w - view.s * img.naturalWidth) / 2;
    view.ty = (h - view.s * img.naturalHeight) / 2;
    apply();
  }

  function loaded(img) {
    return new Promise((resolve) => {
      if (img.complete && img.naturalWidth) resolve();
      else { img.onload = () => resolve(); img.onerror = () => resolve(); }
    });
  }

  async function render(state) {
    progress(state);
    document.body.dataset.ready = "0";
    if (state.finished || !state.trial) { trial = null; show("finished"); busy = false; return; }
    show("rate");
    const changed = !trial || trial.reference !== state.trial.reference;
    trial = state.trial;
    busy = true;
    const ref = $("img-ref"), cand = $("img-cand");
    ref.src = trial.reference;
    cand.src = trial.candidate;
    await Promise.all([loaded(ref), loaded(cand)]);
    if (changed) fit();
    shownAt = performance.now();
    busy = false;
    document.body.dataset.ready = "1";
  }

  async function rate(score) {
    if (busy || !trial) return;
    busy = true;
    document.body.dataset.ready = "0";
    status("saving...");
    const ms = Math.round(performance.now() - shownAt);
    try {
      const r = await api("POST", "/api/rate", { position: trial.position, trial: trial.trial, score, ms });
      if (r.ok) {
        status("saved " + r.data.done + " / " + r.data.total);
        await render(r.data);
        return;
      }
      status("not saved: " + (r.data.error || r.status), true);
      if (r.status === 409 || r.status === 400) { const s = await api("GET", "/api/state"); if (s.ok) { await render(s.data); return; } }
    } catch (e) {
      status("not saved (no connection): rate again", true);
    }
    busy = false;
    document.body.dataset.ready = "1";
  }

  // zoom about the cursor and pan by dragging; both panes share `view`
  function wire(pane) {
    pane.addEventListener("wheel", (e) => {
      e.preventDefault();
      const box = pane.getBoundingClientRect();
      const cx = e.clientX - box.left, cy = e.clientY - box.top;
      const k = Math.exp(-e.deltaY * 0.0015);
      const s = Math.min(Math.max(view.s * k, 0.05), 64);
      view.tx = cx - (cx - view.tx) * (s / view.s);
      view.ty = cy - (cy - view.ty) * (s / view.s);
      view.s = s;
      apply();
    }, { passive: false });
    let drag = null;
    pane.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, y: e.clientY, tx: view.tx, ty: view.ty };
      pane.setPointerCapture(e.pointerId);
      pane.classList.add("dragging");
    });
    pane.addEventListener("pointermove", (e) => {
      if (!drag) return;
      view.tx = drag.tx + e.clientX - drag.x;
      view.ty = drag.ty + e.clientY - drag.y;
      apply();
    });
    const end = () => { drag = null; pane.classList.remove("dragging"); };
    pane.addEventListener("pointerup", end);
    pane.addEventListener("pointercancel", end);
  }

  document.addEventListener("keydown", (e) => {
    if ($("rate").hidden || e.target instanceof HTMLInputElement || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key >= "1" && e.key <= "4") { e.preventDefault(); rate(Number(e.key)); }
    else if (e.key === "0") { e.preventDefault(); fit(); }
  });

  async function join(e) {
    e.preventDefault();
    const code = $("code").value.trim(), name = $("name").value.trim();
    const body = code ? { code } : { name };
    const r = await api("POST", "/api/join", body);
    if (!r.ok) { $("join-hint").textContent = r.data.error || ("error " + r.status); return; }
    $("join-hint").textContent = "";
    await render(r.data);
  }

  async function start() {
    for (const pane of [$("view-ref"), $("view-cand")]) wire(pane);
    for (const b of document.querySelectorAll(".scores button")) {
      b.addEventListener("click", () => rate(Number(b.dataset.score)));
    }
    window.addEventListener("resize", fit);
    $("join-form").addEventListener("submit", join);
    const config = await api("GET", "/api/config");
    if (config.ok && config.data.require_code) $("name-label").hidden = true;
    $("join-hint").textContent = config.data.require_code ? "This study needs the invitation code you were given."
      : "Enter your name (the same name resumes where you stopped), or an invitation code.";
    const state = await api("GET", "/api/state");
    if (state.ok) {
      if (state.data.done > 0) status("welcome back: " + state.data.done + " ratings saved");
      await render(state.data);
    }
    else { show("join"); busy = false; }
  }

  start();
})();
