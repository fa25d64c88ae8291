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

  // What the model says about the first chosen image (run form): boxes drawn over it, and its detections offered
  // as targets. Runs the model in a job (the web process never runs model code).
  document.querySelectorAll("[data-predictions]").forEach(function (box) {
    var form = box.closest("form");
    var view = box.querySelector(".prediction-view");
    var status = box.querySelector("[data-prediction-status]");
    var select = form.querySelector("[data-target-select]");
    var current = null;
    function post(url, body) {
      return fetch(url, { method: "POST", credentials: "same-origin", body: JSON.stringify(body),
                          headers: { "Content-Type": "application/json", "X-Requested-With": "viz-server", Accept: "application/json" } })
        .then(function (response) { return response.json(); });
    }
    function wait(url) {
      return fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (response) { return response.json(); })
        .then(function (job) {
          if (job.status === "queued" || job.status === "running") {
            return new Promise(function (resolve) { window.setTimeout(resolve, 300); }).then(function () { return wait(url); });
          }
          return job;
        });
    }
    function svg(name, attributes) {
      var element = document.createElementNS("http://www.w3.org/2000/svg", name);
      Object.keys(attributes).forEach(function (key) { element.setAttribute(key, attributes[key]); });
      return element;
    }
    function show(job, picture) {
      view.textContent = "";
      if (job.status !== "done") { status.textContent = job.error || job.status; return; }
      status.textContent = "";
      var result = job.result, prediction = result.prediction || {};
      if (prediction.detections) {
        var scale = 256 / Math.max(result.size[0], result.size[1]);
        var drawing = svg("svg", { width: result.size[1] * scale, height: result.size[0] * scale, role: "img", "aria-label": "detections" });
        drawing.appendChild(svg("image", { href: picture.src, width: result.size[1] * scale, height: result.size[0] * scale, preserveAspectRatio: "none" }));
        select.querySelectorAll("option[data-detection]").forEach(function (option) { option.remove(); });
        prediction.detections.forEach(function (detection, index) {
          var b = detection.box;
          drawing.appendChild(svg("rect", { x: b[0] * scale, y: b[1] * scale, width: (b[2] - b[0]) * scale, height: (b[3] - b[1]) * scale, class: "detection-box" }));
          var label = svg("text", { x: b[0] * scale + 2, y: b[1] * scale + 11, class: "detection-label" });
          label.textContent = index + ": " + detection["class"];
          drawing.appendChild(label);
          var option = document.createElement("option");
          option.value = "detection:" + index;
          option.setAttribute("data-detection", "");
          option.textContent = "detection " + index + ": " + detection["class"] + " (" + detection.confidence.toFixed(2) + ")";
          select.insertBefore(option, select.options[1] || null);
        });
        view.appendChild(drawing);
        if (!prediction.detections.length) { status.textContent = "no detection reaches the confidence threshold on this image"; }
      } else {
        var text = document.createElement("pre");
        text.textContent = JSON.stringify(prediction, null, 1);
        view.appendChild(text);
      }
    }
    form.addEventListener("change", function (event) {
      if (event.target.name !== "image_ids") { return; }
      var checked = form.querySelector("input[name=image_ids]:checked");
      if (!checked) { box.hidden = true; current = null; return; }
      if (checked.value === current) { return; }
      current = checked.value;
      box.hidden = false;
      status.textContent = "running the model on it...";
      var picture = checked.parentNode.querySelector("img");
      post(box.getAttribute("data-predict-url"), { image_id: parseInt(checked.value, 10) })
        .then(function (data) {
          if (!data.job) { throw new Error(data.error || "the prediction was refused"); }
          return wait(box.getAttribute("data-job-url").replace(/0$/, String(data.job.id)));
        })
        .then(function (job) { show(job, picture); })
        .catch(function (error) { status.textContent = String(error.message || error); });
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

  // Forms that only choose (the run page's model and technique): follow the choice at once.
  document.querySelectorAll("form[data-submit-on-change]").forEach(function (form) {
    form.querySelectorAll("select").forEach(function (select) {
      select.addEventListener("change", function () { form.submit(); });
    });
  });

  // Click a picture to see it enlarged (pixels kept sharp); click again or press Escape to close.
  var viewer = null;
  function closeViewer() { if (viewer) { viewer.remove(); viewer = null; } }
  document.addEventListener("keydown", function (event) { if (event.key === "Escape") { closeViewer(); } });
  document.querySelectorAll(".pictures img, img.zoomable").forEach(function (picture) {
    picture.classList.add("zoomable");
    picture.addEventListener("click", function (event) {
      event.preventDefault();
      closeViewer();
      viewer = document.createElement("div");
      viewer.className = "viewer";
      var big = document.createElement("img");
      big.src = picture.currentSrc || picture.src;
      big.alt = picture.alt;
      viewer.appendChild(big);
      viewer.addEventListener("click", closeViewer);
      document.body.appendChild(viewer);
    });
  });
})();
