/* IKOMA console, admin pages: a token the API shows once (a new API client's, a runner bootstrap
 * token) is put in the page here, from the answer of the form that asked for it — the server never
 * renders it. A form with data-token-target="<id>" fills that element's [data-token] with the answer's
 * `token`, its #enrol-command with data-enrol-prefix + token + data-enrol-suffix (the command to run on
 * the new machine), its [data-token-expires] with `expiresAt`, and shows it. Text only, never HTML.
 * An optional multiple select ([data-omit-empty]) with nothing chosen is left out of the body.
 */
(function () {
  "use strict";

  // an optional multiple select left empty means "not given" (an API client for every server), not []:
  // it is left out of the body by disabling it while ikoma.js reads the form (same event, bubble phase)
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    var selects = form.querySelectorAll("select[multiple][data-omit-empty]");
    for (var i = 0; i < selects.length; i++) {
      var select = selects[i];
      if (select.disabled || select.selectedOptions.length > 0) continue;
      select.disabled = true;
      window.setTimeout(function (element) { element.disabled = false; }, 0, select);
    }
  }, true);

  // tokens are URL-safe base64 with a kind prefix (ikoma_…, ikb_…): anything else is not put in a command
  var TOKEN = /^[A-Za-z0-9_\-]+$/;

  document.addEventListener("ikoma:success", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-token-target")) return;
    var box = document.getElementById(form.getAttribute("data-token-target"));
    var answer = event.detail || {};
    var token = typeof answer.token === "string" ? answer.token : "";
    if (!box || !token) return;
    var holders = box.querySelectorAll("[data-token]");
    for (var i = 0; i < holders.length; i++) holders[i].textContent = token;
    var command = box.querySelector("#enrol-command");
    if (command) {
      command.textContent = TOKEN.test(token)
        ? (command.getAttribute("data-enrol-prefix") || "") + token + (command.getAttribute("data-enrol-suffix") || "")
        : "";
    }
    var expires = box.querySelector("[data-token-expires]");
    if (expires) expires.textContent = String(answer.expiresAt || "").replace("T", " ").replace(/\.\d+/, "");
    box.hidden = false;
    box.setAttribute("tabindex", "-1");
    box.focus();
  });
})();
