// Small progressive enhancements; every page works without them.
(function () {
  "use strict";

  // Live progress: poll the JSON API of a job (or report) and reload the page when it has finished.
  document.querySelectorAll("[data-poll-url]").forEach(function (box) {
    var url = box.getAttribute("data-poll-url");
    var bar = box.querySelector("progress");
    var message = box.querySelector("[data-message]");
    function poll() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (response) { return response.json(); })
        .then(function (data) {
          var jobs = data.jobs || [data];
          var pending = jobs.filter(function (job) { return job.status === "queued" || job.status === "running"; });
          if (!data.jobs && bar && data.progress) {
            bar.max = Math.max(data.progress.total || 1, 1);
            bar.value = data.progress.done || 0;
          }
          if (message) {
            message.textContent = data.jobs ? pending.length + " of " + jobs.length + " jobs still running"
                                            : (data.progress.message || data.status);
          }
          if (pending.length === 0) { window.location.reload(); } else { window.setTimeout(poll, 500); }
        })
        .catch(function () { window.setTimeout(poll, 2000); });
    }
    window.setTimeout(poll, 300);
  });

  // Drag and drop onto a file input's zone.
  document.querySelectorAll("[data-dropzone]").forEach(function (zone) {
    var input = zone.querySelector("input[type=file]");
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function () { zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      if (input && event.dataTransfer && event.dataTransfer.files.length) { input.files = event.dataTransfer.files; }
    });
  });

  // Filter table rows as the user types.
  document.querySelectorAll("[data-filter]").forEach(function (field) {
    var table = document.querySelector(field.getAttribute("data-filter"));
    field.addEventListener("input", function () {
      var needle = field.value.toLowerCase();
      table.querySelectorAll("[data-row]").forEach(function (row) {
        row.hidden = needle && row.textContent.toLowerCase().indexOf(needle) === -1;
      });
    });
  });
})();
