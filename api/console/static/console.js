// tokentill console: draws the usage chart from the JSON the page carries (the table beside it
// holds the same figures, so the page reads without JavaScript). Amounts arrive as exact
// decimal strings; Number() is used only to place points on the screen.
(function () {
  "use strict";
  var PALETTE = ["#0b6b63", "#b45309", "#1d4ed8", "#9d174d", "#4d7c0f", "#6d28d9", "#0e7490", "#92400e"];
  window.tokentillCharts = {};

  function draw(root) {
    var holder = root.querySelector("[data-usage-chart]");
    var source = root.querySelector("#usage-data");
    if (!holder || !source || typeof uPlot === "undefined") { return; }
    var data = JSON.parse(source.textContent);
    holder.textContent = "";
    if (!data.series.length) { return; }
    var xs = data.days.map(function (d) { return Date.parse(d + "T00:00:00Z") / 1000; });
    var series = [{}];
    var columns = [xs];
    data.series.forEach(function (s, i) {
      series.push({ label: s.label, stroke: PALETTE[i % PALETTE.length], width: 2,
                    fill: PALETTE[i % PALETTE.length] + "1a", points: { show: data.days.length < 45 },
                    value: function (u, v) { return v == null ? "-" : s.amounts[u.cursor.idx] + " " + data.currency; } });
      columns.push(s.amounts.map(Number));
    });
    var width = Math.max(320, holder.clientWidth - 8);
    var chart = new uPlot({
      width: width, height: 300, series: series, tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
      axes: [{ stroke: "#4a5565", grid: { stroke: "#eceef1" },
               // one tick a day (every few days over long ranges), labelled with the day as the table lists it
               splits: function () { var step = Math.ceil(xs.length / 12); return xs.filter(function (_, i) { return i % step === 0; }); },
               values: function (u, splits) { return splits.map(function (t) { return new Date(t * 1e3).toISOString().slice(5, 10); }); } },
             { stroke: "#4a5565", grid: { stroke: "#eceef1" }, size: 90,
               values: function (u, ticks) { return ticks.map(function (t) { return t.toLocaleString("en-US", { maximumFractionDigits: 9 }) + " " + data.currency; }); } }],
      scales: { x: { time: true } }, legend: { live: true }
    }, columns, holder);
    window.tokentillCharts.usage = { data: data, chart: chart };
  }

  // A request htmx does not swap in (a 5xx, a 503 while the database restarts, no network) is
  // said beside the form that sent it, in its words; the next request of the form clears it.
  function notice(form) {
    var prior = form.previousElementSibling;
    return prior && prior.hasAttribute("data-request-error") ? prior : null;
  }
  function say(form, text) {
    var box = notice(form);
    if (!box) {
      box = document.createElement("div");
      box.className = "notice bad";
      box.setAttribute("role", "alert");
      box.setAttribute("data-request-error", "");
      form.parentNode.insertBefore(box, form);
    }
    box.textContent = text;
  }
  document.addEventListener("htmx:beforeRequest", function (e) {
    var box = notice(e.detail.elt);
    if (box) { box.remove(); }
  });
  document.addEventListener("htmx:responseError", function (e) {
    var xhr = e.detail.xhr;
    var retry = xhr.getResponseHeader("Retry-After");
    say(e.detail.elt, "Nothing changed: the server answered " + xhr.status + " " + (xhr.statusText || "") +
        (retry ? "; try again in " + retry + " s." : "; try again, or reload the page."));
  });
  document.addEventListener("htmx:sendError", function (e) {
    say(e.detail.elt, "Nothing changed: the request did not reach the server; check the connection and try again.");
  });
  // A table wider than a phone's window scrolls in its place (console.css): one that does is
  // made a tab stop, so the keyboard can scroll it too.
  function scrollers() {
    Array.prototype.forEach.call(document.querySelectorAll("main table"), function (table) {
      if (table.scrollWidth > table.clientWidth + 1) { table.tabIndex = 0; } else { table.removeAttribute("tabindex"); }
    });
  }
  document.addEventListener("DOMContentLoaded", function () { draw(document); scrollers(); });
  document.addEventListener("htmx:afterSwap", function (e) { draw(e.target); scrollers(); });
  window.addEventListener("resize", scrollers);
})();
