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

  // Drag and drop onto a file input's zone; the zone says what is chosen. A zone marked data-dropzone-submit
  // (an upload-only form) uploads what was dropped at once.
  document.querySelectorAll("[data-dropzone]").forEach(function (zone) {
    var input = zone.querySelector("input[type=file]");
    var status = zone.querySelector("[data-dropzone-status]");
    function describe() {
      if (!status || !input.files.length) { return; }
      var names = Array.prototype.map.call(input.files, function (file) { return file.name; });
      status.textContent = names.length + (names.length === 1 ? " file" : " files") + " chosen: " + names.slice(0, 5).join(", ") + (names.length > 5 ? ", ..." : "");
    }
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function () { zone.classList.remove("over"); });
    });
    if (input) { input.addEventListener("change", describe); }
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      if (!input || !event.dataTransfer || !event.dataTransfer.files.length) { return; }
      input.files = event.dataTransfer.files;
      describe();
      if (zone.hasAttribute("data-dropzone-submit")) {
        if (status) { status.textContent = "uploading " + status.textContent.replace(/ chosen:/, ":"); }
        input.form.requestSubmit();
      }
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
    function element(tag, text, className) {
      var made = document.createElement(tag);
      if (text !== undefined) { made.textContent = text; }
      if (className) { made.className = className; }
      return made;
    }
    // A prediction in words: classes as labelled bars (probability, or share of the map for a segmenter),
    // decoded text, an embedding's size; anything else as its JSON.
    function described(prediction) {
      if (prediction.top) {
        var list = element("ol", undefined, "label-bars");
        prediction.top.forEach(function (entry) {
          var share = entry.probability !== undefined ? entry.probability : entry.area;
          var item = element("li");
          item.appendChild(element("span", entry["class"], "bar-label"));
          var bar = element("meter");
          bar.min = 0; bar.max = 1; bar.value = share;
          bar.setAttribute("aria-label", entry["class"]);
          item.appendChild(bar);
          item.appendChild(element("span", (100 * share).toFixed(1) + "%" + (entry.probability !== undefined ? "" : " of the map"), "bar-value"));
          list.appendChild(item);
        });
        return list;
      }
      if (prediction.text !== undefined) {
        var line = element("p", "reads: ");
        line.appendChild(element("q", prediction.text));
        line.appendChild(document.createTextNode(" (confidence " + Number(prediction.confidence).toFixed(2) + ")"));
        return line;
      }
      if (prediction.norm !== undefined) {
        return element("p", "an embedding of " + prediction.dimensions + " dimensions, norm " + Number(prediction.norm).toFixed(3));
      }
      return element("pre", JSON.stringify(prediction, null, 1));
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
        // the image's own detections replace the generic "detection k" choices, in order, after top1
        Array.prototype.filter.call(select.options, function (option) { return option.value.indexOf("detection:") === 0; })
          .forEach(function (option) { option.remove(); });
        var after = select.options[1] || null;
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
          select.insertBefore(option, after);
        });
        view.appendChild(drawing);
        if (!prediction.detections.length) { status.textContent = "no detection reaches the confidence threshold on this image"; }
      } else {
        view.appendChild(described(prediction));
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

  // A table wider than its box scrolls inside it: make that box reachable from the keyboard (arrow keys scroll it).
  function focusableScrolling() {
    document.querySelectorAll("table.data, .scroll").forEach(function (box) {
      if (box.scrollWidth > box.clientWidth + 1 && !box.hasAttribute("tabindex")) {
        box.setAttribute("tabindex", "0");
        var caption = box.querySelector("caption");
        box.setAttribute("aria-label", (caption ? caption.textContent : "table") + " (scrolls sideways)");
        if (box.tagName !== "TABLE") { box.setAttribute("role", "region"); }
      }
    });
  }
  focusableScrolling();
  window.addEventListener("resize", focusableScrolling);

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
