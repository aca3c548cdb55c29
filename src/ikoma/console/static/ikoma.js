/* IKOMA console: our one small script (no build step). Loaded with `defer` on every page.
 *
 * - JSON form submit: <form data-api-url="/v1/..." data-api-method="POST"> is sent with fetch as JSON
 *   with the X-CSRF-Token header (from <meta name="csrf-token">). An error's `message` and `reason`
 *   are shown in the form's [role=alert] element; on success `data-on-success` decides what happens:
 *   a URL template (`/orders/{id}`: fields of the JSON answer), `reload`, or nothing (the form gets
 *   `data-done` and its [role=status] says so). The form also fires `ikoma:success` (detail: answer).
 * - Live updates: IKOMA.subscribe(url, kinds, onEvent, statusElement) opens an EventSource; a dropped
 *   stream is resumed by the browser, which resends Last-Event-ID, so no event is missed.
 * - Machine page: the live timeline and the uPlot charts (data read from JSON <script> blocks).
 * No user data is ever inserted as HTML: text goes in with textContent.
 */
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") || "" : "";
  }

  function readJsonBlock(id) {
    var block = document.getElementById(id);
    if (!block) return null;
    try {
      return JSON.parse(block.textContent || "null");
    } catch (e) {
      return null;
    }
  }

  /* --- JSON forms ------------------------------------------------------------------------------- */

  // "params.message" -> body.params.message
  function assign(target, name, value) {
    var parts = name.split(".");
    var node = target;
    for (var i = 0; i < parts.length - 1; i++) {
      if (typeof node[parts[i]] !== "object" || node[parts[i]] === null) node[parts[i]] = {};
      node = node[parts[i]];
    }
    node[parts[parts.length - 1]] = value;
  }

  function fieldValue(el) {
    var kind = el.getAttribute("data-type") || "";
    if (el.type === "checkbox" && !kind) return el.checked;
    if (el.type === "checkbox" && kind === "list") return el.checked ? el.value : undefined;
    if (el.tagName === "SELECT" && el.multiple) {
      return Array.prototype.filter.call(el.options, function (o) { return o.selected; })
        .map(function (o) { return o.value; });
    }
    var raw = el.value;
    if (raw === "" && !el.hasAttribute("data-keep-empty")) return undefined; // optional, left out
    if (kind === "number" || el.type === "number") return Number(raw);
    if (kind === "integer") return parseInt(raw, 10);
    if (kind === "boolean") return raw === "true";
    if (kind === "json") return JSON.parse(raw);
    return raw;
  }

  function formBody(form) {
    var body = {};
    var fields = form.querySelectorAll("input[name], select[name], textarea[name]");
    var count = 0;
    for (var i = 0; i < fields.length; i++) {
      var el = fields[i];
      if (el.disabled || el.type === "submit" || el.type === "button" || el.name === "csrf_token") continue;
      if (el.type === "radio" && !el.checked) continue;
      var value = fieldValue(el);
      if (value === undefined) continue;
      if (el.getAttribute("data-type") === "list") {
        // repeated checkboxes of one name build a list
        var current = body[el.name] || [];
        current.push(value);
        value = current;
      }
      assign(body, el.name, value);
      count++;
    }
    return count ? body : null;
  }

  function fillTemplate(template, answer) {
    return template.replace(/\{(\w+)\}/g, function (_, key) {
      var value = answer && answer[key] !== undefined && answer[key] !== null ? answer[key] : "";
      return encodeURIComponent(String(value));
    });
  }

  function showAlert(form, text) {
    var alert = form.querySelector("[role=alert]");
    if (!alert) {
      alert = document.createElement("p");
      alert.setAttribute("role", "alert");
      alert.className = "alert alert-error";
      form.appendChild(alert);
    }
    alert.textContent = text;
    alert.hidden = !text;
  }

  function showStatus(form, text) {
    var status = form.querySelector("[role=status]");
    if (status) {
      status.textContent = text;
      status.hidden = !text;
    }
  }

  function errorText(status, answer) {
    if (answer && answer.message) {
      return answer.reason ? answer.message + " (" + answer.reason + ")" : answer.message;
    }
    if (status === 401) return "Your session has ended: sign in again.";
    if (status === 403) return "Your role does not allow this.";
    return "The request failed (HTTP " + status + ").";
  }

  function submitJson(form, submitter) {
    var confirmText = form.getAttribute("data-confirm");
    if (confirmText && !window.confirm(confirmText)) return;
    var method = (form.getAttribute("data-api-method") || "POST").toUpperCase();
    var url = form.getAttribute("data-api-url");
    var body;
    try {
      body = method === "GET" || method === "DELETE" ? null : formBody(form);
    } catch (e) {
      showAlert(form, "A field holds invalid JSON: " + e.message);
      return;
    }
    var headers = { Accept: "application/json", "X-CSRF-Token": csrfToken() };
    if (body !== null) headers["Content-Type"] = "application/json";
    showAlert(form, "");
    showStatus(form, "");
    form.setAttribute("aria-busy", "true");
    if (submitter) submitter.disabled = true;
    fetch(url, {
      method: method,
      headers: headers,
      body: body === null ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    })
      .then(function (response) {
        return response.text().then(function (text) {
          var answer = null;
          try { answer = text ? JSON.parse(text) : null; } catch (e) { answer = null; }
          return { ok: response.ok, status: response.status, answer: answer };
        });
      })
      .then(function (result) {
        form.removeAttribute("aria-busy");
        if (submitter) submitter.disabled = false;
        if (!result.ok) {
          showAlert(form, errorText(result.status, result.answer));
          return;
        }
        form.dispatchEvent(new CustomEvent("ikoma:success", { bubbles: true, detail: result.answer }));
        var next = form.getAttribute("data-on-success");
        if (next === "reload") {
          window.location.reload();
        } else if (next) {
          window.location.assign(fillTemplate(next, result.answer));
        } else {
          form.setAttribute("data-done", "true");
          if (submitter && submitter.getAttribute("data-done-text")) {
            submitter.textContent = submitter.getAttribute("data-done-text");
            submitter.disabled = true;
          }
          showStatus(form, form.getAttribute("data-done-message") || "Done.");
        }
      })
      .catch(function () {
        form.removeAttribute("aria-busy");
        if (submitter) submitter.disabled = false;
        showAlert(form, "The server could not be reached.");
      });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-api-url")) return;
    event.preventDefault();
    submitJson(form, event.submitter || form.querySelector("button[type=submit], button:not([type])"));
  });

  // a select or checkbox with data-autosubmit sends its (GET) form at once: filters apply on change
  document.addEventListener("change", function (event) {
    var el = event.target;
    if (el && el.hasAttribute && el.hasAttribute("data-autosubmit") && el.form) el.form.requestSubmit();
  });

  /* --- live updates ----------------------------------------------------------------------------- */

  function setLiveStatus(element, state) {
    if (!element) return;
    var labels = { live: "Live", connecting: "Connecting…", reconnecting: "Reconnecting…", closed: "Not live: reload the page" };
    element.setAttribute("data-state", state);
    element.textContent = labels[state] || state;
  }

  /* Subscribe to an SSE stream; `kinds` are the event names to listen to (named SSE events do not
   * reach onmessage). The browser reconnects by itself and resends Last-Event-ID: nothing is lost. */
  function subscribe(url, kinds, onEvent, statusElement) {
    if (!window.EventSource) return null;
    setLiveStatus(statusElement, "connecting");
    var source = new EventSource(url, { withCredentials: true });
    var handler = function (message) {
      var data = null;
      try { data = JSON.parse(message.data); } catch (e) { return; }
      onEvent(message.type, data, message.lastEventId);
    };
    kinds.forEach(function (kind) { source.addEventListener(kind, handler); });
    source.addEventListener("open", function () { setLiveStatus(statusElement, "live"); });
    source.addEventListener("error", function () {
      // CONNECTING: the browser retries by itself; CLOSED: refused (signed out, forbidden)
      setLiveStatus(statusElement, source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
    });
    return source;
  }

  /* --- machine page: live timeline ------------------------------------------------------------- */

  function eventSummary(event) {
    var data = event.data || {};
    if (typeof data.message === "string" && data.message) return data.message;
    var parts = [];
    // an order's transition: as the server-rendered timeline words it, `QUEUED → CLAIMED (claimed)`
    if (data.to) parts.push(data.from ? data.from + " \u2192 " + data.to : data.to);
    if (data.playbookKey) parts.push(data.playbookKey);
    if (data.status) parts.push(data.status);
    if (data.reason) parts.push("(" + data.reason + ")");
    return parts.length ? parts.join(" ") : event.kind;
  }

  function severityOf(kind) {
    if (/\.(failed|timeout|stale|offline|revoked)$/.test(kind)) return "error";
    if (/^(state\.|message\.created|order\.cancel)/.test(kind)) return "warning";
    return "info";
  }

  function timelineEntry(event) {
    var item = document.createElement("li");
    item.className = "timeline-item timeline-new severity-" + severityOf(event.kind);
    item.setAttribute("data-event-id", String(event.id));
    var time = document.createElement("time");
    time.setAttribute("datetime", event.ts || "");
    time.textContent = (event.ts || "").replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC");
    var kind = document.createElement("span");
    kind.className = "timeline-kind";
    kind.textContent = event.kind;
    var text = document.createElement("span");
    text.className = "timeline-message";
    text.textContent = eventSummary(event);
    item.appendChild(time);
    item.appendChild(kind);
    item.appendChild(text);
    if (event.orderId) {
      var link = document.createElement("a");
      link.href = "/orders/" + encodeURIComponent(event.orderId);
      link.textContent = "order";
      item.appendChild(link);
    }
    if (event.actor) {
      var actor = document.createElement("span");
      actor.className = "timeline-actor";
      actor.textContent = event.actor;
      item.appendChild(actor);
    }
    return item;
  }

  var ENDED = /^order\.(succeeded|failed|cancelled|timeout|stale)$/;

  /* The machine page's orders table follows the same stream: a row shows its order's new status, and
   * an order that ended loses its Cancel button (it could only answer "cannot become CANCELLED"). */
  function updateOrderRow(event) {
    if (!event.orderId || !event.data || !event.data.to) return;
    var row = document.querySelector('#orders tr[data-order-id="' + String(event.orderId).replace(/"/g, "") + '"]');
    if (!row) return;
    var badge = row.querySelector(".badge");
    if (badge) badge.textContent = event.data.to;
    if (ENDED.test(event.kind)) {
      row.setAttribute("data-ended", "true");
      var form = row.querySelector("form[data-api-url]");
      if (form) form.remove();
    }
  }

  function startTimeline(section) {
    var list = section.querySelector("[data-timeline-list]");
    var url = section.getAttribute("data-stream-url");
    var kinds = readJsonBlock(section.getAttribute("data-kinds-id")) || [];
    if (!list || !url) return;
    var seen = {};
    subscribe(url, kinds, function (_kind, event) {
      if (event.id !== undefined && seen[event.id]) return; // a resumed stream may repeat the last one
      seen[event.id] = true;
      var empty = section.querySelector("[data-timeline-empty]");
      if (empty) empty.hidden = true;
      list.insertBefore(timelineEntry(event), list.firstChild);
      updateOrderRow(event);
    }, section.querySelector("[data-live-status]"));
  }

  /* --- charts (uPlot, vendored) ----------------------------------------------------------------- */

  function drawChart(holder, series) {
    if (!window.uPlot || !series) return;
    var key = holder.getAttribute("data-chart");
    var values = series[key];
    if (!values || !series.t || series.t.length === 0) return;
    var unit = holder.getAttribute("data-unit") || "";
    var width = Math.max(240, holder.clientWidth || 600);
    var options = {
      width: width,
      height: 180,
      series: [
        {},
        { label: holder.getAttribute("data-label") || key, stroke: "#2563eb", width: 2,
          value: function (_u, v) { return v === null || v === undefined ? "—" : v.toFixed(1) + unit; } },
      ],
      axes: [{}, { values: function (_u, ticks) { return ticks.map(function (v) { return v + unit; }); } }],
      // the whole window (24 h) even when only a few points were collected in it
      scales: Object.assign(
        series.from && series.to ? { x: { time: true, range: [series.from, series.to] } } : {},
        unit === "%" ? { y: { range: [0, 100] } } : {}
      ),
      legend: { show: true },
    };
    holder.textContent = "";
    var chart = new window.uPlot(options, [series.t, values], holder);
    var resize = function () { chart.setSize({ width: Math.max(240, holder.clientWidth), height: 180 }); };
    window.addEventListener("resize", resize);
  }

  function startCharts() {
    var holders = document.querySelectorAll("[data-chart]");
    if (!holders.length) return;
    var series = readJsonBlock("metrics-data");
    for (var i = 0; i < holders.length; i++) drawChart(holders[i], series);
  }

  function start() {
    var timeline = document.querySelector("[data-live-timeline]");
    if (timeline) startTimeline(timeline);
    startCharts();
  }

  window.IKOMA = { subscribe: subscribe, csrfToken: csrfToken, readJsonBlock: readJsonBlock, submitJson: submitJson };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
