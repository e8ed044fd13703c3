// Job pages: poll the job's JSON once a second and show its steps, progress and result.
"use strict";

function text(tag, content, cls) {
  const el = document.createElement(tag);
  el.textContent = content;
  if (cls) el.className = cls;
  return el;
}

function render(job, data) {
  document.getElementById("job-state").textContent = data.state;
  document.getElementById("job-state").className = "state " + data.state;
  document.getElementById("job-elapsed").textContent = Math.round(data.elapsed);
  const bar = document.getElementById("job-bar");
  if (data.done) {
    bar.value = 1;
  } else if (data.progress.fraction === null) {
    bar.removeAttribute("value");
  } else {
    bar.value = data.progress.fraction;
  }
  document.getElementById("job-progress-label").textContent = data.progress.label;
  const steps = document.getElementById("job-steps");
  steps.replaceChildren(...data.steps.map((s) => text("li", s)));
  const console_ = document.getElementById("job-console");
  console_.textContent = data.console.join("\n");
  console_.classList.toggle("empty", data.console.length === 0);
  const result = document.getElementById("job-result");
  if (data.result) {
    const summary = text("p", data.result.summary, "summary " + (data.result.ok ? "good" : "bad"));
    summary.id = "job-summary";
    const links = document.createElement("ul");
    links.className = "links";
    for (const link of data.result.links) {
      const a = text("a", link.label);
      a.href = link.url;
      const li = document.createElement("li");
      li.appendChild(a);
      links.appendChild(li);
    }
    const parts = [summary, links];
    if (data.result.lines.length) parts.push(text("pre", data.result.lines.join("\n")));
    result.replaceChildren(...parts);
  }
  job.dataset.done = data.done ? "true" : "false";
}

function poll(job) {
  fetch(job.dataset.url, { credentials: "same-origin", cache: "no-store" })
    .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
    .then((data) => {
      render(job, data);
      if (!data.done) setTimeout(() => poll(job), 1000);
    })
    .catch(() => setTimeout(() => poll(job), 3000));
}

document.addEventListener("DOMContentLoaded", () => {
  const job = document.getElementById("job");
  if (job && job.dataset.done !== "true") poll(job);
});
