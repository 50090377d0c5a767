// pgqueue dashboard: actions, the run form, bulk retry and the live job page.
// Every request sends the page's CSRF token; everything shown is set as text, never as HTML.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
    body: JSON.stringify(body === undefined ? {} : body),
  });
  let payload = null;
  try {
    payload = await response.json();
  } catch (e) {
    payload = { error: response.statusText };
  }
  return { ok: response.ok, status: response.status, payload: payload };
}

function flash(message, isError) {
  const box = document.getElementById("flash");
  if (!box) return;
  box.textContent = message;
  box.className = isError ? "flash error" : "flash";
  box.hidden = false;
}

function showErrors(list, payload) {
  list.replaceChildren();
  const details = (payload && payload.details) || [];
  const items = details.length ? details : [{ loc: [], msg: (payload && payload.error) || "failed" }];
  for (const item of items) {
    const li = document.createElement("li");
    const where = (item.loc || []).join(".");
    li.textContent = where ? where + ": " + item.msg : item.msg;
    if (where) li.dataset.field = where;
    list.appendChild(li);
  }
  list.hidden = false;
}

function bindActions() {
  for (const button of document.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", async () => {
      if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
      button.disabled = true;
      const result = await post(button.dataset.action);
      if (!result.ok) {
        button.disabled = false;
        flash(result.payload.error || "failed", true);
        return;
      }
      if (button.dataset.then) window.location.assign(button.dataset.then);
      else window.location.reload();
    });
  }
}

function bindBulkRetry() {
  const button = document.getElementById("bulk-retry");
  if (!button) return;
  button.addEventListener("click", async () => {
    if (!window.confirm(button.dataset.confirm)) return;
    const filter = JSON.parse(button.dataset.filter);
    let total = 0;
    for (;;) {
      const result = await post(button.dataset.bulkRetry, filter);
      if (!result.ok) {
        flash(result.payload.error || "failed", true);
        return;
      }
      total += result.payload.retried;
      if (result.payload.next_after === null) break;
      filter.after = result.payload.next_after;
    }
    flash("Retried " + total + " jobs.", false);
  });
}

function bindRunForms() {
  for (const form of document.querySelectorAll("form[data-run]")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const errors = form.querySelector(".errors");
      let data;
      try {
        data = JSON.parse(form.elements.data.value || "null");
      } catch (e) {
        showErrors(errors, { error: "not JSON: " + e.message });
        return;
      }
      const result = await post(form.dataset.run, { data: data });
      if (!result.ok) {
        showErrors(errors, result.payload);
        return;
      }
      window.location.assign(result.payload.url);
    });
  }
}

function bindLogin() {
  const form = document.querySelector("form[data-login]");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = await post(form.dataset.login, { token: form.elements.token.value });
    if (!result.ok) {
      showErrors(form.querySelector(".errors"), result.payload);
      return;
    }
    window.location.assign(result.payload.url);
  });
}

function bindGoto() {
  const form = document.querySelector("form[data-goto]");
  if (!form) return;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = form.elements.id.value.trim();
    if (/^[0-9]+$/.test(id)) window.location.assign(form.dataset.goto + "/" + id);
  });
}

function pretty(value) {
  return JSON.stringify(value === undefined ? null : value, null, 2);
}

// While a job is unfinished its page asks for it every second; once it ends, the page
// reloads to show its errors and logs.
function followJob() {
  const box = document.getElementById("job");
  if (!box || box.dataset.finished === "true") return;
  const tick = async () => {
    let response;
    try {
      response = await fetch(box.dataset.url, { credentials: "same-origin" });
    } catch (e) {
      window.setTimeout(tick, 2000);
      return;
    }
    if (response.status === 404) {
      flash("This job is gone (deleted, or removed by retention).", true);
      return;
    }
    if (response.ok) {
      const job = await response.json();
      const state = document.getElementById("job-state");
      state.textContent = job.state;
      state.className = "state " + job.state;
      document.getElementById("job-attempt").textContent = job.attempt;
      document.getElementById("job-progress").textContent = pretty(job.last_progress);
      document.getElementById("job-output").textContent = pretty(job.output);
      if (job.finished || job.state !== box.dataset.state) {
        if (job.finished) {
          window.location.reload();
          return;
        }
        box.dataset.state = job.state;
      }
    }
    window.setTimeout(tick, 1000);
  };
  window.setTimeout(tick, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  bindActions();
  bindBulkRetry();
  bindRunForms();
  bindLogin();
  bindGoto();
  followJob();
});
