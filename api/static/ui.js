// kiban office web screen: the live parts. No framework, no build step.
// 1. Elements with data-live="<url>" are re-fetched (HTML fragments) when
//    the server reports an update for the office over Server-Sent Events.
// 2. The subsidy form asks the server for the expected amount as it is
//    filled in, before anything is submitted.
(function () {
  "use strict";

  function refresh(element) {
    return fetch(element.dataset.live, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) { if (html !== null) { element.innerHTML = html; } });
  }

  function startLive() {
    var live = document.querySelectorAll("[data-live]");
    if (live.length === 0 || !window.EventSource) { return; }
    var status = document.getElementById("live-status");
    var source = new EventSource("/ui/events");
    source.onopen = function () { document.body.dataset.live = "open"; };
    source.onmessage = function (message) {
      var update = {};
      try { update = JSON.parse(message.data); } catch (e) { /* keep going */ }
      // A logged read changes nothing the screen shows (and the caseload's
      // own name reads would otherwise refresh it once per person).
      if (update.event_type === "insured.record_viewed") { return; }
      Promise.all(Array.prototype.map.call(live, refresh)).then(function () {
        document.body.dataset.lastUpdate = String(update.position || "");
        if (status) {
          // The page's language decides the format (ja-JP: 15:38:01), not
          // the browser's.
          var english = document.documentElement.lang === "en";
          var when = new Date().toLocaleTimeString(english ? "en-US" : "ja-JP");
          status.textContent = (english ? "Updated " : "更新しました ") +
            when + " (" + (update.event_type || "") + ")";
        }
      });
    };
  }

  function startSubsidy() {
    var form = document.getElementById("subsidy-form");
    var target = document.getElementById("subsidy-preview");
    if (!form || !target) { return; }
    var timer = null;
    function calculate() {
      var body = new URLSearchParams();
      new FormData(form).forEach(function (value, name) {
        if (typeof value === "string") { body.append(name, value); }
      });
      fetch("/ui/subsidy/calculate", { method: "POST", body: body, credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (html !== null) { target.innerHTML = html; target.dataset.calculated = "yes"; }
        });
    }
    function later() { clearTimeout(timer); timer = setTimeout(calculate, 250); }
    form.addEventListener("input", later);
    form.addEventListener("change", later);
  }

  document.addEventListener("DOMContentLoaded", function () {
    startLive();
    startSubsidy();
  });
})();
