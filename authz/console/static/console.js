// jira-authz console: copy buttons and live checking of restriction lines. No inline script
// (the CSP forbids it); everything shown is set with textContent, never parsed as HTML.
"use strict";

function copyFrom(id, button) {
  const el = document.getElementById(id);
  if (!el) return;
  const text = el.value !== undefined ? el.value : el.textContent;
  const status = document.getElementById("copy-status");
  const done = (msg) => { if (status) status.textContent = msg; };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(
      () => done("Copied: " + button.textContent.replace(/^Copy /, "")),
      () => done("Copy failed: select the text and copy it by hand."));
  } else {
    done("Copying needs HTTPS here: select the text and copy it by hand.");
  }
}

function showCheck(box, result) {
  box.replaceChildren();
  const add = (cls, text) => {
    const p = document.createElement("p");
    p.className = cls;
    p.textContent = text;
    box.appendChild(p);
  };
  for (const e of result.errors || []) add("error", "Line " + e.line + ": " + e.reason);
  for (const w of result.warnings || []) add("warning", "Warning, line " + w.line + ": " + w.reason);
  if (!(result.errors || []).length && !(result.warnings || []).length) add("ok", "Lines look fine.");
}

function liveCheck(area) {
  const box = document.getElementById("limits-check");
  const form = area.form;
  const csrf = form && form.querySelector('input[name="csrf"]');
  if (!box || !csrf) return;
  let timer = null;
  let seq = 0;
  area.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const mine = ++seq;
      fetch(area.dataset.checkUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf.value},
        body: JSON.stringify({limits: area.value}),
      }).then((r) => r.json()).then((result) => {
        if (mine === seq) showCheck(box, result);
      }).catch(() => {});
    }, 250);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("button[data-copy]")) {
    b.addEventListener("click", () => copyFrom(b.dataset.copy, b));
  }
  for (const a of document.querySelectorAll("textarea[data-check-url]")) liveCheck(a);
});
