/* pytrace report: the zoomable thread timeline.
 *
 * Data comes from the page's JSON block with id "pytrace-data" (see
 * pytrace/report/data.py: Timeline.to_json).  Strings from the
 * trace are shown only as canvas text or through textContent, never as HTML.
 * After each draw the canvas's data-drawn attribute holds the number of
 * slices drawn (tests read it).
 */
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("pytrace-data").textContent);
  var canvas = document.getElementById("timeline");
  var box = document.getElementById("timeline-box");
  var tooltip = document.getElementById("tooltip");
  var rangeLabel = document.getElementById("view-range");
  var ctx = canvas.getContext("2d");

  var ROW = 16;        // height of one nesting level
  var LABEL = 18;      // thread name line above its slices
  var AXIS = 22;       // time axis at the top
  var GAP = 8;         // space between threads
  var MAX_DEPTH = 40;  // deeper levels are not drawn (the row would be too tall)
  var MIN_SPAN = 10;   // ns: the deepest zoom
  var KIND_NAMES = ["call", "GC pause", "blocked", "syscall", "user region"];
  var KIND_COLORS = [null, "#d62728", "#9e9e9e", "#ff9800", "#7e57c2"];

  var span = Math.max(data.span, 1);
  var view = { start: 0, end: span };
  var width = 0;
  var dpr = 1;

  var rows = data.threads.map(function (thread) {
    return { thread: thread, top: 0, slices: [] };
  });
  data.slices.forEach(function (s) { rows[s[0]].slices.push(s); });
  var totalHeight = AXIS;
  rows.forEach(function (row) {
    row.top = totalHeight;
    totalHeight += LABEL + (Math.min(row.thread.depth, MAX_DEPTH) + 1) * ROW + GAP;
  });

  function fmt(ns) {
    var units = [["s", 1e9], ["ms", 1e6], ["µs", 1e3]];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(ns) >= units[i][1]) {
        return parseFloat((ns / units[i][1]).toPrecision(4)) + " " + units[i][0];
      }
    }
    return parseFloat(ns.toPrecision(4)) + " ns";
  }

  var hues = {};
  function color(s) {
    if (s[4] !== 0) { return KIND_COLORS[s[4]]; }
    var hue = hues[s[5]];
    if (hue === undefined) {
      var name = data.strings[s[5]], h = 0;
      for (var i = 0; i < name.length; i++) { h = (h * 31 + name.charCodeAt(i)) % 360; }
      hue = hues[s[5]] = 150 + h % 80;  // greens to blues: apart from the fixed colours
    }
    return "hsl(" + hue + ", 50%, " + (64 + hue % 14) + "%)";
  }

  function niceStep(rough) {
    var power = Math.pow(10, Math.floor(Math.log10(rough)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (steps[i] * power >= rough) { return steps[i] * power; }
    }
    return 10 * power;
  }

  function drawAxis(scale) {
    var step = niceStep(Math.max((view.end - view.start) / Math.max(width / 110, 1), 1));
    ctx.fillStyle = "#444";
    ctx.strokeStyle = "#e4e4e8";
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    for (var t = Math.ceil(view.start / step) * step; t <= view.end; t += step) {
      var x = (t - view.start) * scale;
      ctx.beginPath();
      ctx.moveTo(x + 0.5, AXIS - 4);
      ctx.lineTo(x + 0.5, totalHeight);
      ctx.stroke();
      ctx.fillText(fmt(t), x + 3, AXIS / 2);
    }
  }

  function draw() {
    var scale = width / (view.end - view.start);
    ctx.clearRect(0, 0, width, totalHeight);
    ctx.fillStyle = "rgba(214, 39, 40, 0.18)";
    data.pauses.forEach(function (p) {
      var x0 = (p[0] - view.start) * scale, x1 = (p[0] + p[1] - view.start) * scale;
      if (x1 >= 0 && x0 <= width) {
        ctx.fillRect(Math.max(x0, 0), AXIS, Math.max(Math.min(x1, width) - Math.max(x0, 0), 1),
                     totalHeight - AXIS);
      }
    });
    drawAxis(scale);
    var drawn = 0;
    ctx.textBaseline = "alphabetic";
    rows.forEach(function (row) {
      ctx.fillStyle = "#1d1d1f";
      ctx.font = "600 12px system-ui, sans-serif";
      var label = row.thread.name + "  (thread " + row.thread.tid + ")";
      if (row.thread.omitted) {
        label += "  " + row.thread.omitted.toLocaleString("en-US") + " shorter slices not drawn";
      }
      ctx.fillText(label, 4, row.top + 13);
      ctx.font = "11px system-ui, sans-serif";
      row.slices.forEach(function (s) {
        if (s[3] > MAX_DEPTH) { return; }
        var x0 = (s[1] - view.start) * scale, x1 = (s[1] + s[2] - view.start) * scale;
        if (x1 < 0 || x0 > width) { return; }
        x0 = Math.max(x0, 0);
        x1 = Math.min(x1, width);
        var y = row.top + LABEL + s[3] * ROW;
        ctx.fillStyle = color(s);
        ctx.fillRect(x0, y, Math.max(x1 - x0, 1), ROW - 1);
        if (x1 - x0 > 36) {
          ctx.save();
          ctx.beginPath();
          ctx.rect(x0, y, x1 - x0 - 2, ROW);
          ctx.clip();
          ctx.fillStyle = s[4] === 1 || s[4] === 4 ? "#fff" : "#1d1d1f";
          ctx.fillText(data.strings[s[5]], x0 + 3, y + ROW - 4);
          ctx.restore();
        }
        drawn++;
      });
    });
    canvas.setAttribute("data-drawn", String(drawn));
    rangeLabel.textContent = fmt(view.start) + " – " + fmt(view.end) +
      "  (" + fmt(view.end - view.start) + " shown)";
  }

  var pending = false;
  function redraw() {
    if (!pending) {
      pending = true;
      window.requestAnimationFrame(function () { pending = false; draw(); });
    }
  }

  function resize() {
    dpr = window.devicePixelRatio || 1;
    width = Math.max(box.clientWidth, 100);
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(totalHeight * dpr);
    canvas.style.height = totalHeight + "px";
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    draw();
  }

  function setView(start, end) {
    var length = Math.min(Math.max(end - start, MIN_SPAN), span);
    start = Math.min(Math.max(start, 0), span - length);
    view.start = start;
    view.end = start + length;
    redraw();
  }

  function zoom(factor, x) {
    var at = view.start + (x / width) * (view.end - view.start);
    var length = (view.end - view.start) * factor;
    setView(at - (x / width) * length, at - (x / width) * length + length);
  }

  canvas.addEventListener("wheel", function (event) {
    event.preventDefault();
    zoom(event.deltaY > 0 ? 1.25 : 0.8, event.offsetX);
  }, { passive: false });

  var drag = null;
  canvas.addEventListener("mousedown", function (event) {
    drag = { x: event.clientX, start: view.start, end: view.end };
    canvas.classList.add("dragging");
  });
  window.addEventListener("mouseup", function () {
    drag = null;
    canvas.classList.remove("dragging");
  });
  canvas.addEventListener("dblclick", function () { setView(0, span); });
  document.getElementById("zoom-in").addEventListener("click", function () { zoom(0.5, width / 2); });
  document.getElementById("zoom-out").addEventListener("click", function () { zoom(2, width / 2); });
  document.getElementById("zoom-reset").addEventListener("click", function () { setView(0, span); });
  window.addEventListener("resize", resize);

  function sliceAt(x, y) {
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i];
      var depth = Math.floor((y - row.top - LABEL) / ROW);
      if (depth < 0 || depth > Math.min(row.thread.depth, MAX_DEPTH)) { continue; }
      var scale = width / (view.end - view.start);
      var t = view.start + x / scale, slack = 1 / scale;
      for (var j = 0; j < row.slices.length; j++) {
        var s = row.slices[j];
        if (s[3] === depth && s[1] - slack <= t && t <= s[1] + s[2] + slack) { return s; }
      }
    }
    return null;
  }

  canvas.addEventListener("mousemove", function (event) {
    if (drag) {
      var shift = (event.clientX - drag.x) / width * (drag.end - drag.start);
      setView(drag.start - shift, drag.end - shift);
      tooltip.hidden = true;
      return;
    }
    var s = sliceAt(event.offsetX, event.offsetY);
    if (!s) { tooltip.hidden = true; return; }
    tooltip.textContent = data.strings[s[5]] + "\n" + KIND_NAMES[s[4]] + " · " + fmt(s[2]) +
      " at " + fmt(s[1]) + (data.strings[s[6]] ? "\n" + data.strings[s[6]] : "");
    tooltip.hidden = false;
    tooltip.style.left = Math.min(event.offsetX + 14, width - 240) + "px";
    tooltip.style.top = (event.offsetY + 14) + "px";
  });
  canvas.addEventListener("mouseleave", function () { tooltip.hidden = true; });

  resize();
})();
