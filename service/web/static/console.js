// Progressive enhancement only: every page works without this file.
(function () {
  "use strict";
  // A form marked data-once is sent once: the server also files one request per form key.
  document.querySelectorAll("form[data-once]").forEach(function (form) {
    form.addEventListener("submit", function () {
      form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
    });
  });
  var live = document.getElementById("live");
  if (!live) { return; }
  var url = live.getAttribute("data-progress-url");
  var statusEl = document.getElementById("status");
  var known = statusEl ? statusEl.getAttribute("data-status") : "";
  var seenActions = document.querySelectorAll("progress[data-model]").length;
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(String(r.status)); } return r.json(); })
      .then(function (data) {
        if (data.status !== known || data.actions.length !== seenActions) {
          window.location.replace(window.location.pathname);
          return;
        }
        data.actions.forEach(function (a) {
          var bar = document.querySelector('progress[data-model="' + CSS.escape(a.model) + '"]');
          if (bar) { bar.value = a.progress; bar.textContent = Math.round(a.progress * 100) + " %"; }
          var st = document.querySelector('[data-model-status="' + CSS.escape(a.model) + '"]');
          if (st) { st.textContent = a.status; }
        });
        window.setTimeout(poll, 1500);
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }
  window.setTimeout(poll, 1000);
})();
