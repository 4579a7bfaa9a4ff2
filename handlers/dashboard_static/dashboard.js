// Staff dashboard: small conveniences only; every page also works without JavaScript.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Ask before actions that cannot be undone from the dashboard (resolve, transfer).
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  }
  // Apply queue filters as soon as one changes.
  for (const field of document.querySelectorAll("[data-autosubmit]")) {
    field.addEventListener("change", () => field.form.submit());
  }
  // Never send a form twice by double-clicking.
  for (const form of document.querySelectorAll("form[method=post]")) {
    form.addEventListener("submit", (event) => {
      if (event.defaultPrevented) {
        return;
      }
      for (const button of form.querySelectorAll("button[type=submit]")) {
        button.disabled = true;
      }
    });
  }
});
