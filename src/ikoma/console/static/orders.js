/* IKOMA console: the run form and the live order page. Loaded with `defer` before ikoma.js (base.html
 * puts the page's scripts first) and uses its window.IKOMA, so it starts on DOMContentLoaded, once both
 * have run.
 *
 * Run form (templates/run.html):
 * - the playbook select shows that playbook's fieldset and disables the others' inputs (a disabled
 *   input is neither sent nor validated);
 * - a list param is typed one item per line in a textarea; its hidden input holds the JSON list sent;
 * - a destructive app tool's `confirm` must repeat the app name (data-must-equal) before anything is sent;
 * - on success ([data-follow-order]) the browser goes to the new order's page.
 * Order page (templates/order.html): status and events live from /v1/events/stream (resumed after the
 * last event id read before the order was), the log live from /v1/orders/{id}/logs/stream; when the
 * order ends, the attempts and report sections are read again from the page. Text only, never HTML
 * built from data.
 */
(function () {
  "use strict";

  /* --- run form -------------------------------------------------------------------------------- */

  function setFieldsetActive(fieldset, active) {
    fieldset.hidden = !active;
    fieldset.disabled = !active;
    var inputs = fieldset.querySelectorAll("input, select, textarea");
    for (var i = 0; i < inputs.length; i++) inputs[i].disabled = !active;
  }

  function choosePlaybook(form) {
    var select = form.querySelector("[data-playbook-select]");
    if (!select) return;
    var sets = form.querySelectorAll("fieldset[data-playbook]");
    for (var i = 0; i < sets.length; i++) {
      setFieldsetActive(sets[i], sets[i].getAttribute("data-playbook") === select.value);
    }
  }

  function syncLines(textarea) {
    var hidden = document.getElementById(textarea.getAttribute("data-lines-for"));
    if (!hidden) return;
    var lines = textarea.value.split("\n")
      .map(function (line) { return line.trim(); })
      .filter(function (line) { return line.length > 0; });
    hidden.value = lines.length ? JSON.stringify(lines) : "";
  }

  function confirmationProblem(form) {
    var fields = form.querySelectorAll("[data-must-equal]");
    for (var i = 0; i < fields.length; i++) {
      var field = fields[i];
      if (field.disabled) continue;
      var fieldset = field.closest("fieldset") || form;
      var other = fieldset.querySelector('[name="' + field.getAttribute("data-must-equal") + '"]');
      if (other && field.value !== other.value) {
        field.focus();
        return "Type the app name exactly as above to confirm (" + (other.value || "it is empty") + ").";
      }
    }
    return "";
  }

  function showAlert(form, text) {
    var alert = form.querySelector("[role=alert]");
    if (!alert) return;
    alert.textContent = text;
    alert.hidden = !text;
  }

  function startRunForm(form) {
    choosePlaybook(form);
    form.addEventListener("change", function (event) {
      if (event.target && event.target.hasAttribute("data-playbook-select")) {
        choosePlaybook(form);
        showAlert(form, "");
      }
    });
    form.addEventListener("input", function (event) {
      if (event.target && event.target.hasAttribute("data-lines-for")) syncLines(event.target);
    });
  }

  // capture phase: runs before ikoma.js's submit handler (which sends the JSON), so the list fields
  // are filled in first and a wrong confirmation stops the request altogether
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || form.id !== "run-form") return;
    var lists = form.querySelectorAll("textarea[data-lines-for]");
    for (var i = 0; i < lists.length; i++) syncLines(lists[i]);
    var problem = confirmationProblem(form);
    if (problem) {
      event.preventDefault();
      event.stopPropagation();
      showAlert(form, problem);
    }
  }, true);

  // POST /v1/orders (and a re-run) answer {order: {id, ...}}: follow it to its page
  document.addEventListener("ikoma:success", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-follow-order")) return;
    var answer = event.detail || {};
    var order = answer.order || answer;
    if (order && order.id) window.location.assign("/orders/" + encodeURIComponent(String(order.id)));
  });

  /* --- order page ------------------------------------------------------------------------------ */

  var BADGES = { SUCCEEDED: "ok", RUNNING: "warning", CLAIMED: "warning", FAILED: "error", TIMEOUT: "error", STALE: "error" };

  function readJson(id) {
    var block = document.getElementById(id);
    if (!block) return null;
    try { return JSON.parse(block.textContent || "null"); } catch (e) { return null; }
  }

  function setStatus(status) {
    var element = document.getElementById("order-status");
    if (!element || !status) return;
    element.textContent = status;
    element.setAttribute("data-status", status);
    element.className = "badge badge-" + (BADGES[status] || "unknown");
  }

  function cell(tag, text, className) {
    var element = document.createElement(tag);
    if (className) element.className = className;
    element.textContent = text;
    return element;
  }

  function appendEvent(event) {
    var body = document.querySelector("[data-events-body]");
    if (!body) return;
    var data = event.data || {};
    var row = document.createElement("tr");
    row.setAttribute("data-event-status", data.to || "");
    var when = document.createElement("th");
    when.setAttribute("scope", "row");
    var time = cell("time", (event.ts || "").replace("T", " "));
    time.setAttribute("datetime", event.ts || "");
    when.appendChild(time);
    row.appendChild(when);
    row.appendChild(cell("td", (data.from || "—") + " → " + (data.to || "")));
    row.appendChild(cell("td", data.reason || "", "mono"));
    row.appendChild(cell("td", data.attempt === undefined ? "" : String(data.attempt), "num"));
    row.appendChild(cell("td", event.actor || ""));
    body.appendChild(row);
  }

  // the order ended: the attempts, report and summary are read again from the page (same origin,
  // server-rendered and escaped), the cancel button goes
  function refreshSections(pageUrl) {
    var cancel = document.getElementById("order-cancel");
    if (cancel) cancel.remove();
    fetch(pageUrl, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        ["order-summary", "order-attempts", "order-report"].forEach(function (id) {
          var now = document.getElementById(id);
          var then = fresh.getElementById(id);
          if (now && then) now.replaceWith(document.importNode(then, true));
        });
      })
      .catch(function () { /* the live status stands; a reload shows the rest */ });
  }

  function startOrderPage(root) {
    var subscribe = window.IKOMA && window.IKOMA.subscribe;
    if (!subscribe) return;
    var terminal = readJson("order-terminal") || [];
    var kinds = (readJson("order-kinds") || []).concat(["stream.lagging"]);
    var status = root.querySelector("[data-live-status]");
    var pageUrl = root.getAttribute("data-page-url");
    var ended = terminal.indexOf((document.getElementById("order-status") || {}).textContent || "") >= 0;
    var seen = {};

    var events = subscribe(root.getAttribute("data-events-url"), kinds, function (kind, event) {
      if (kind === "stream.lagging") { window.location.reload(); return; }
      if (event.id !== undefined && seen[event.id]) return; // a resumed stream may repeat the last one
      seen[event.id] = true;
      appendEvent(event);
      var to = (event.data || {}).to;
      if (to) setStatus(to);
      if (to && terminal.indexOf(to) >= 0 && !ended) {
        ended = true;
        refreshSections(pageUrl);
        if (events) events.close();
        if (status) status.textContent = "";
      }
    }, status);
    if (ended && events) {
      events.close();
      if (status) status.textContent = "";
    }

    var log = document.getElementById("order-log");
    var logState = document.getElementById("order-log-state");
    var lastSeq = -1;
    var logs = subscribe(root.getAttribute("data-log-url"), ["log", "end"], function (kind, chunk) {
      if (kind === "end") {
        // the order ended and every chunk was sent: stop, or the browser would reconnect for ever
        if (logs) logs.close();
        if (logState) {
          logState.textContent = log && log.textContent ? (chunk && chunk.truncated ? "The log was truncated." : "") : "No log output.";
        }
        return;
      }
      if (!chunk || typeof chunk.seq !== "number" || chunk.seq <= lastSeq) return;
      lastSeq = chunk.seq;
      if (log) {
        log.appendChild(document.createTextNode(chunk.data || ""));
        log.setAttribute("data-empty", "false");
        log.scrollTop = log.scrollHeight;
      }
      if (logState) logState.textContent = "";
    }, null);
    if (!logs && logState) logState.textContent = "This browser cannot follow the log live.";
  }

  function start() {
    var form = document.getElementById("run-form");
    if (form) startRunForm(form);
    var order = document.getElementById("order-live");
    if (order) startOrderPage(order);
  }

  // deferred scripts run before DOMContentLoaded, this one before ikoma.js (window.IKOMA): wait for it
  if (document.readyState === "complete") start();
  else document.addEventListener("DOMContentLoaded", start);
})();
