// The message editor's live preview. While the practitioner types, the form is
// posted to the preview address (the same lint and rendering as the プレビュー
// button, which saves nothing) and the answer replaces the page's results. The
// page works the same without this script: the button posts the whole form.
(function () {
  "use strict";
  var form = document.getElementById("editor");
  var results = document.getElementById("results");
  if (!form || !results || !window.fetch || !window.FormData) {
    return;
  }
  var WAIT_MS = 600; // after the last keystroke: one request per pause, not per key
  var timer = null;
  var latest = 0;

  function refresh() {
    var data = new FormData(form);
    data.set("action", "preview");
    var mine = ++latest;
    fetch(form.getAttribute("data-preview"), {
      method: "POST",
      body: data,
      credentials: "same-origin",
    })
      .then(function (answer) {
        // Signed out meanwhile (the sign-in page answered, or the form's CSRF token
        // is no longer the session's): say so before the practitioner presses 保存.
        if (answer.redirected || answer.status === 400) {
          if (mine === latest) {
            signedOut();
          }
          return null;
        }
        return answer.ok ? answer.text() : null;
      })
      .then(function (html) {
        // An older answer that arrives late must not replace a newer one.
        if (html !== null && mine === latest) {
          results.innerHTML = html;
        }
      })
      .catch(function () {
        // Offline or signed out: the プレビュー button still says what is wrong.
      });
  }

  function signedOut() {
    var notice = document.createElement("p");
    notice.className = "problem";
    notice.setAttribute("role", "alert");
    notice.textContent =
      "ログインが切れています。このページはそのままにして、別のタブでログインし直してから保存してください。";
    results.replaceChildren(notice);
  }

  form.addEventListener("input", function () {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, WAIT_MS);
  });
})();
