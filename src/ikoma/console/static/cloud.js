/* IKOMA console, cloud pages (instances, catalog). Loaded with `defer` before ikoma.js, which it uses
 * once the document is parsed (window.IKOMA).
 *
 * - "New instance" form: provider → zone → instance type → model. The server renders every choice;
 *   this script disables (and hides) the zones of other providers, the types not deployable in the
 *   chosen zone (an option's data-zones) and the models the type's GPU memory cannot hold, so only a
 *   deployable combination can be sent. The API checks
 *   it again (POST /deployments answers a reason for anything else).
 * - Instances table: each `instance.<state>` event of /v1/events/stream updates its row's state badge
 *   and shows Terminate or Archive as that state allows; an instance this page does not list yet gets a
 *   row with its name and state. A resumed stream (Last-Event-ID) repeats nothing.
 * - Catalog sync: the answer's counts are said in the form's [role=status].
 * No user data is ever inserted as HTML: text goes in with textContent.
 */
(function () {
  "use strict";

  /* --- new instance form ----------------------------------------------------------------------- */

  function firstEnabled(select) {
    for (var i = 0; i < select.options.length; i++) {
      if (!select.options[i].disabled) return select.options[i];
    }
    return null;
  }

  function offer(select, keep) {
    for (var i = 0; i < select.options.length; i++) {
      var option = select.options[i];
      var ok = keep(option);
      option.disabled = !ok;
      option.hidden = !ok;
    }
    if (select.selectedOptions.length === 0 || select.selectedOptions[0].disabled) {
      var first = firstEnabled(select);
      select.value = first ? first.value : "";
    }
  }

  function startDeployForm(form) {
    var provider = form.querySelector("[data-cloud-provider]");
    var zone = form.querySelector("[data-cloud-zone]");
    var type = form.querySelector("[data-cloud-type]");
    var model = form.querySelector("[data-cloud-model]");
    if (!provider || !zone || !type) return;
    // a model fits a type when the type's GPU memory in all holds it (domain/catalog.fits); 0: no GPU needed
    function filterModels() {
      if (!model) return;
      var chosen = type.selectedOptions[0];
      var room = chosen && !chosen.disabled ? Number(chosen.getAttribute("data-gpu-memory") || 0) : -1;
      offer(model, function (option) {
        var needed = Number(option.getAttribute("data-gpu-memory") || 0);
        return room >= 0 && (needed === 0 || room >= needed);
      });
    }
    function filterTypes() {
      var chosen = zone.selectedOptions[0];
      var code = chosen ? chosen.getAttribute("data-code") : null;
      offer(type, function (option) {
        var where = (option.getAttribute("data-zones") || "").split(" ");
        return option.getAttribute("data-provider") === provider.value && code !== null && where.indexOf(code) >= 0;
      });
      filterModels();
    }
    function filterZones() {
      offer(zone, function (option) { return option.getAttribute("data-provider") === provider.value; });
      filterTypes();
    }
    provider.addEventListener("change", filterZones);
    zone.addEventListener("change", filterTypes);
    type.addEventListener("change", filterModels);
    filterZones();
  }

  /* --- live instances table -------------------------------------------------------------------- */

  var BADGE = {
    provisioning: "unknown", booting: "warning", ready: "ok", unreachable: "error",
    terminating: "warning", terminated: "unknown", failed: "error", orphaned: "error",
  };

  function rowOf(table, instanceId) {
    var rows = table.querySelectorAll("tr[data-instance-id]");
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].getAttribute("data-instance-id") === instanceId) return rows[i];
    }
    return null;
  }

  function newRow(table, data) {
    var body = table.tBodies[0];
    var columns = table.tHead ? table.tHead.rows[0].cells.length : 2;
    var row = document.createElement("tr");
    row.setAttribute("data-instance-id", data.instanceId);
    var name = document.createElement("th");
    name.setAttribute("scope", "row");
    name.className = "mono";
    name.textContent = data.name || data.instanceId;
    var state = document.createElement("td");
    var badge = document.createElement("span");
    badge.setAttribute("data-instance-state", "");
    state.appendChild(badge);
    var rest = document.createElement("td");
    rest.colSpan = Math.max(1, columns - 2);
    rest.className = "muted";
    rest.textContent = (data.provider || "") + " · new: reload the page for its details";
    row.appendChild(name);
    row.appendChild(state);
    row.appendChild(rest);
    body.insertBefore(row, body.firstChild);
    var empty = document.getElementById("instances-empty");
    if (empty) empty.hidden = true;
    return row;
  }

  function showState(row, state, serverId, allowed, at) {
    row.setAttribute("data-state", state);
    if (at) row.setAttribute("data-live-at", at); // the state came by the stream, at the event's time
    var badge = row.querySelector("[data-instance-state]");
    if (badge) {
      badge.textContent = state;
      badge.className = "badge badge-" + (BADGE[state] || "unknown");
    }
    var terminate = row.querySelector("form[data-instance-terminate]");
    if (terminate) terminate.hidden = allowed.terminable.indexOf(state) < 0;
    var archive = row.querySelector("form[data-instance-archive]");
    if (archive) archive.hidden = allowed.archivable.indexOf(state) < 0;
    var server = row.querySelector("[data-instance-server]");
    if (server && serverId && !server.querySelector("a")) {
      var link = document.createElement("a");
      link.href = "/machines/" + encodeURIComponent(serverId);
      link.textContent = "machine";
      server.textContent = "";
      server.appendChild(link);
    }
  }

  function startInstances(section) {
    var table = section.querySelector("table");
    var url = section.getAttribute("data-stream-url");
    var read = window.IKOMA.readJsonBlock;
    var kinds = read(section.getAttribute("data-kinds-id")) || [];
    var allowed = {
      terminable: read(section.getAttribute("data-terminable-id")) || [],
      archivable: read(section.getAttribute("data-archivable-id")) || [],
    };
    var archivedView = /[?&]archived=true/.test(window.location.search);
    if (!table || !url) return;
    var seen = {};
    window.IKOMA.subscribe(url, kinds, function (_kind, event) {
      if (event.id !== undefined && seen[event.id]) return;
      seen[event.id] = true;
      var data = event.data || {};
      if (!data.instanceId || !data.to) return;
      var row = rowOf(table, String(data.instanceId));
      if (!row) {
        if (archivedView) return; // a new instance is never archived
        row = newRow(table, data);
      }
      showState(row, data.to, event.serverId, allowed, event.ts);
    }, section.parentNode.querySelector("[data-live-status]"));
  }

  /* --- catalog sync ---------------------------------------------------------------------------- */

  function syncSummary(answer) {
    if (!answer || !answer.providers) return "Done.";
    var parts = answer.providers.map(function (p) {
      return p.provider + ": " + p.added + " added, " + p.updated + " updated, " + p.unavailable +
        " no longer sold" + (p.rejected && p.rejected.length ? ", " + p.rejected.length + " rejected" : "");
    });
    return (parts.length ? parts.join("; ") : "No provider to sync") + ". Reload the page to see the catalog.";
  }

  document.addEventListener("ikoma:success", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-cloud-sync")) return;
    var status = form.querySelector("[role=status]");
    if (status) {
      // ikoma.js writes its "Done." after this event: ours replaces it on the next tick
      window.setTimeout(function () {
        status.textContent = syncSummary(event.detail);
        status.hidden = false;
      }, 0);
    }
  });

  function start() {
    var forms = document.querySelectorAll("form[data-cloud-deploy]");
    for (var i = 0; i < forms.length; i++) startDeployForm(forms[i]);
    var live = document.querySelector("[data-live-instances]");
    if (live && window.IKOMA) startInstances(live);
  }

  // deferred scripts run in order and this one comes before ikoma.js: start once the document is
  // parsed, when every deferred script (window.IKOMA) has run
  if (window.IKOMA) start();
  else document.addEventListener("DOMContentLoaded", start);
})();
