"""The JavaScript of the simplex explorer (:mod:`ssdlib.reporting.widgets`): maths and drawing, no library.

Kept as a Python string so that the runner's library digest covers it (an edit re-executes the notebooks that
show the widget).  ``SCRIPT`` defines ``SSDExplorer`` in a browser (``window.SSDExplorer``) and in Node
(``module.exports``), which is how the tests compare its numbers with ``ssdlib.waterfill`` and ``ssdlib.SSD``.
"""

SCRIPT = r"""
var SSDExplorer = (function () {
  "use strict";
  var U64 = Math.pow(2, -53);
  var SQRT3_2 = Math.sqrt(3) / 2;
  var COLOURS = ["#d62728", "#2ca02c", "#9467bd"];

  function sum(x) { var s = 0; for (var i = 0; i < x.length; i++) s += x[i]; return s; }

  function argsortStable(keys) {
    var idx = keys.map(function (_, i) { return i; });
    idx.sort(function (i, j) { return keys[i] < keys[j] ? -1 : keys[i] > keys[j] ? 1 : i - j; });
    return idx;
  }

  /* Radius slack per side for float64 output, as ssdlib.solver._margin. */
  function margin(C) { return (2 * C + 8) * U64 + U64; }

  /* argmin KL(p||q) s.t. ||p - f||_1 <= eps on the simplex: a float64 port of ssdlib.solver._row_loop
     (the readable reference of ssdlib.waterfill), returning the levels a <= 1 <= b as well:
     p_i = min(max(f_i, a q_i), b q_i).  reached: q lies inside the ball, so p = q. */
  function waterfill(f, q, eps) {
    var C = f.length, h = eps / 2, i, k, r;
    var l1 = 0;
    for (i = 0; i < C; i++) l1 += Math.abs(q[i] - f[i]);
    if (l1 + (C + 2) * Math.pow(2, -52) <= eps) return {p: q.slice(), a: 1, b: 1, reached: true};
    var pos = q.map(function (v) { return v > 0; });
    var order = argsortStable(f.map(function (v, j) { return pos[j] ? v / q[j] : Infinity; }));
    var a = 1, F = 0, Q = 0;
    for (k = 0; k < C; k++) {
      i = order[k];
      if (!pos[i]) break;
      r = f[i] / q[i];
      if (r * Q - F >= h) break;
      F += f[i]; Q += q[i]; a = (h + F) / Q;
    }
    a = Math.min(a, 1);
    var m0 = 0;
    for (i = 0; i < C; i++) if (!pos[i]) m0 += f[i];
    var down = new Array(C), b = Infinity;
    if (m0 > h) {  // KL-infeasible: cap the zero-q entries at a level L, never lower the others
      var vals = [];
      for (i = 0; i < C; i++) if (!pos[i]) vals.push(f[i]);
      vals.sort(function (x, y) { return y - x; });
      var L = 0, n = 0;
      F = 0;
      for (k = 0; k < vals.length; k++) {
        if (F - n * vals[k] >= h) break;
        F += vals[k]; n += 1; L = (F - h) / n;
      }
      for (i = 0; i < C; i++) down[i] = pos[i] ? 0 : Math.max(f[i] - L, 0);
    } else {
      F = m0; Q = 0;
      order = argsortStable(f.map(function (v, j) { return pos[j] ? -v / q[j] : Infinity; }));
      for (k = 0; k < C; k++) {
        i = order[k];
        if (!pos[i]) break;
        r = f[i] / q[i];
        if (F - r * Q >= h) break;
        F += f[i]; Q += q[i]; b = (F - h) / Q;
      }
      b = Math.max(b, 1);
      for (i = 0; i < C; i++) {
        down[i] = isFinite(b) ? Math.max(f[i] - b * q[i], 0) : (pos[i] ? 0 : f[i]);
      }
    }
    var up = new Array(C);
    for (i = 0; i < C; i++) {
      up[i] = Math.max(a * q[i] - f[i], 0);
      if (up[i] > 0) down[i] = 0;
    }
    var U = sum(up), D = sum(down);
    var t = Math.min(U, D, h - margin(C));
    if (t <= 0) return {p: f.slice(), a: a, b: b, reached: false};
    var Z = 0;
    if (!(m0 > h)) for (i = 0; i < C; i++) if (!pos[i]) Z += down[i];
    var sz = Z > 0 ? Math.min(1, t / Z) : 0;
    var sd = D - Z > 0 ? (t - sz * Z) / (D - Z) : 0;
    var p = new Array(C);
    for (i = 0; i < C; i++) {
      var wd = (!pos[i] && m0 <= h) ? sz : sd;
      p[i] = Math.max(up[i] > 0 ? f[i] + (t / U) * up[i] : f[i] - wd * down[i], 0);
    }
    return {p: p, a: a, b: b, reached: false};
  }

  function xlogy(x, y) { return x === 0 ? 0 : x * Math.log(y); }

  /* Shannon entropy in nats (0 log 0 = 0), divided by log C when normalized: ssdlib.entropy. */
  function entropy(f, normalized) {
    var h = 0;
    for (var i = 0; i < f.length; i++) h -= xlogy(f[i], f[i]);
    h = Math.max(h, 0);
    if (normalized) h = f.length > 1 ? h / Math.log(f.length) : 0;
    return h;
  }

  /* KL(p||q) in nats, +inf where p puts mass on a zero of q: ssdlib.kl_divergence. */
  function kl(p, q) {
    var s = 0;
    for (var i = 0; i < p.length; i++) s += xlogy(p[i], p[i]) - xlogy(p[i], q[i]);
    return Math.max(s, 0);
  }

  /* softmax(f / T): the probability that SSD samples each label (T divides the probability vector). */
  function softmax(f, T) {
    var z = f.map(function (v) { return v / T; });
    var m = Math.max.apply(null, z);
    var e = z.map(function (v) { return Math.exp(v - m); });
    var s = sum(e);
    return e.map(function (v) { return v / s; });
  }

  /* y ~ softmax(f/T) by inverse CDF from a uniform u, as SSD.sample_labels (argmax when T = 0). */
  function sampleLabel(f, T, u) {
    var C = f.length, i;
    if (T === 0) {
      var best = 0;
      for (i = 1; i < C; i++) if (f[i] > f[best]) best = i;
      return best;
    }
    var w = softmax(f, T), cdf = [], c = 0;
    for (i = 0; i < C; i++) { c += w[i]; cdf.push(c); }
    var v = u * cdf[C - 1];
    for (i = 0; i < C; i++) if (cdf[i] >= v) return i;
    return C - 1;
  }

  /* One SSD response: y from u, then the water-filled p with radius eps * H(f). */
  function defend(f, qTable, T, eps, normalized, u) {
    var y = sampleLabel(f, T, u);
    return waterfill(f, qTable[y], eps * entropy(f, normalized)).p;
  }

  /* Empirical CMI in nats: mean over points of KL(p(x) || mean output of its class), as ssdlib.cmi. */
  function cmi(probs, labels, nClasses) {
    var C = probs[0].length, cent = [], count = [], y, i, j;
    for (y = 0; y < nClasses; y++) { cent.push(new Array(C).fill(0)); count.push(0); }
    for (i = 0; i < probs.length; i++) {
      count[labels[i]] += 1;
      for (j = 0; j < C; j++) cent[labels[i]][j] += probs[i][j];
    }
    for (y = 0; y < nClasses; y++) for (j = 0; j < C; j++) cent[y][j] /= count[y];
    var total = 0;
    for (i = 0; i < probs.length; i++) total += kl(probs[i], cent[labels[i]]);
    return total / probs.length;
  }

  /* CMI of a labelled cloud before and after SSD (one response per point, uniforms given). */
  function cloudCmi(points, labels, uniforms, qTable, T, eps, normalized) {
    var defended = points.map(function (f, i) { return defend(f, qTable, T, eps, normalized, uniforms[i]); });
    return {before: cmi(points, labels, qTable.length), after: cmi(defended, labels, qTable.length),
            defended: defended};
  }

  function toXY(p) { return [p[1] + 0.5 * p[2], SQRT3_2 * p[2]]; }

  /* Corners of {p in simplex : ||p - f||_1 <= r} for 3 classes: the hexagon f + r/2 (e_i - e_j) clipped to p >= 0. */
  function ballPolygon(f, r) {
    var pairs = [[0, 1], [0, 2], [1, 2], [1, 0], [2, 0], [2, 1]], poly = [];
    pairs.forEach(function (ij) {
      var v = f.slice(); v[ij[0]] += r / 2; v[ij[1]] -= r / 2; poly.push(v);
    });
    var c = toXY(f);
    poly.sort(function (u, v) {
      var pu = toXY(u), pv = toXY(v);
      return Math.atan2(pu[1] - c[1], pu[0] - c[0]) - Math.atan2(pv[1] - c[1], pv[0] - c[0]);
    });
    for (var k = 0; k < 3; k++) {  // Sutherland-Hodgman against the half-plane p_k >= 0
      var out = [];
      for (var i = 0; i < poly.length; i++) {
        var A = poly[i], B = poly[(i + 1) % poly.length];
        if (A[k] >= 0) out.push(A);
        if ((A[k] >= 0) !== (B[k] >= 0)) {
          var s = A[k] / (A[k] - B[k]);
          out.push(A.map(function (x, j) { return x + (B[j] - x) * s; }));
        }
      }
      poly = out;
    }
    return poly;
  }

  /* Everything the figure shows for one setting: the numbers a reader can compare with Python. */
  function compute(cfg, state) {
    var H = entropy(state.f, state.normalized), r = state.eps * H;
    var P = softmax(state.f, state.T);
    var classes = cfg.q.map(function (q, y) {
      var w = waterfill(state.f, q, r);
      return {P: P[y], p: w.p, a: w.a, b: w.b, reached: w.reached, klF: kl(state.f, q), klP: kl(w.p, q),
              l1: w.p.reduce(function (s, v, i) { return s + Math.abs(v - state.f[i]); }, 0)};
    });
    var cloud = cloudCmi(cfg.cloud.points, cfg.cloud.labels, cfg.cloud.uniforms, cfg.q, state.T, state.eps,
                         state.normalized);
    return {f: state.f.slice(), T: state.T, eps: state.eps, normalized: state.normalized, H: H, r: r,
            classes: classes, cmiBefore: cloud.before, cmiAfter: cloud.after, defended: cloud.defended,
            ball: ballPolygon(state.f, r)};
  }

  // ---------------------------------------------------------------------------------------------- drawing
  var S = 360, OX = 24, OY = 392;            // simplex side and origin (class 0 corner) in SVG units
  var BX = 34, BW = 132, BG = 16, BT = 92, BH = 230, LOG2MAX = 4;  // bar charts: left, width, gap, top, height

  function sx(p) { return OX + S * toXY(p)[0]; }
  function sy(p) { return OY - S * toXY(p)[1]; }
  function fmt(x) { return isFinite(x) ? x.toFixed(6) : (x > 0 ? "inf" : "-inf"); }
  function ratioY(v) {
    var l = v > 0 ? Math.log(v) / Math.LN2 : -LOG2MAX;
    l = Math.max(-LOG2MAX, Math.min(LOG2MAX, l));
    return BT + BH * (LOG2MAX - l) / (2 * LOG2MAX);
  }

  function drawSimplex(cfg, st, showCloud) {
    var o = [], y, i;
    var T0 = [1, 0, 0], T1 = [0, 1, 0], T2 = [0, 0, 1];
    o.push('<polygon data-role="simplex" points="' + [T0, T1, T2].map(function (p) { return sx(p) + "," + sy(p); })
           .join(" ") + '" fill="#f2f2f2" stroke="#555"/>');
    ["class 0", "class 1", "class 2"].forEach(function (name, k) {
      var v = [0, 0, 0]; v[k] = 1;
      o.push('<text x="' + (sx(v) + (k === 0 ? -18 : k === 1 ? -24 : 8)) + '" y="' + (sy(v) + (k < 2 ? 16 : 4)) +
             '" font-size="12">' + name + "</text>");
    });
    o.push('<polygon data-role="ball" points="' + st.ball.map(function (p) { return sx(p).toFixed(3) + "," +
           sy(p).toFixed(3); }).join(" ") + '" fill="#1f77b4" fill-opacity="0.2" stroke="#1f77b4"/>');
    if (showCloud) {
      cfg.cloud.points.forEach(function (p, n) {
        o.push('<circle cx="' + sx(p).toFixed(2) + '" cy="' + sy(p).toFixed(2) + '" r="2.2" fill="none" stroke="' +
               COLOURS[cfg.cloud.labels[n]] + '" stroke-opacity="0.35"/>');
      });
      st.defended.forEach(function (p, n) {
        o.push('<circle cx="' + sx(p).toFixed(2) + '" cy="' + sy(p).toFixed(2) + '" r="1.6" fill="' +
               COLOURS[cfg.cloud.labels[n]] + '" fill-opacity="0.7"/>');
      });
    }
    for (y = 0; y < cfg.q.length; y++) {
      var q = cfg.q[y], c = st.classes[y], col = COLOURS[y];
      o.push('<line x1="' + sx(q) + '" y1="' + sy(q) + '" x2="' + sx(c.p) + '" y2="' + sy(c.p) + '" stroke="' + col +
             '" stroke-dasharray="3,2"/>');
      o.push('<path d="M' + (sx(q) - 5) + "," + (sy(q) - 5) + "l10,10m0,-10l-10,10" + '" stroke="' + col +
             '" stroke-width="2"/>');
      o.push('<circle data-role="p-marker-' + y + '" cx="' + sx(c.p).toFixed(3) + '" cy="' + sy(c.p).toFixed(3) +
             '" r="' + (3 + 9 * c.P).toFixed(2) + '" fill="' + col + '" fill-opacity="0.85" stroke="#000"' +
             ' stroke-width="0.5"/>');
    }
    var fx = sx(st.f), fy = sy(st.f), star = [];
    for (i = 0; i < 10; i++) {
      var rad = i % 2 ? 3.5 : 8.5, ang = -Math.PI / 2 + i * Math.PI / 5;
      star.push((fx + rad * Math.cos(ang)).toFixed(2) + "," + (fy + rad * Math.sin(ang)).toFixed(2));
    }
    o.push('<polygon data-role="f-marker" points="' + star.join(" ") + '" fill="#000"/>');
    o.push('<text x="8" y="18" font-size="12">drag f(x) (star); \u00D7: class means q\u02B8; dots: p\u02B8 ' +
           '(size: sampling probability)</text>');
    o.push('<text x="8" y="50" font-size="12">shaded: L1 ball of radius r \u2229 simplex</text>');
    if (showCloud) {
      o.push('<text x="8" y="34" font-size="12">cloud: rings before the defense, dots after (one response ' +
             'each)</text>');
    }
    return o.join("");
  }

  /* Bar charts of f_i / q^y_i (log scale) with the water levels a and b, one per class y. */
  function drawBars(cfg, st) {
    var o = [], y, i;
    for (y = 0; y < cfg.q.length; y++) {
      var x0 = BX + y * (BW + BG), cy = st.classes[y];
      o.push('<text x="' + x0 + '" y="' + (BT - 26) + '" font-size="12" fill="' + COLOURS[y] + '">y = ' + y +
             ": f\u1D62 / q\u02B8\u1D62</text>");
      o.push('<rect x="' + x0 + '" y="' + BT + '" width="' + BW + '" height="' + BH + '" fill="none" stroke="#999"/>');
      [-3, -2, -1, 0, 1, 2, 3].forEach(function (l) {
        var yy = ratioY(Math.pow(2, l));
        o.push('<line x1="' + x0 + '" x2="' + (x0 + BW) + '" y1="' + yy + '" y2="' + yy + '" stroke="#ddd"/>');
        if (y === 0) o.push('<text x="' + (x0 - 4) + '" y="' + (yy + 4) + '" font-size="10" text-anchor="end">' +
                           (l >= 0 ? Math.pow(2, l) : "1/" + Math.pow(2, -l)) + "</text>");
      });
      for (i = 0; i < 3; i++) {
        var ratio = st.f[i] / cfg.q[y][i], top = ratioY(ratio), bx = x0 + 12 + i * 40;
        o.push('<rect data-role="bar-' + y + "-" + i + '" x="' + bx + '" y="' + top.toFixed(2) + '" width="28"' +
               ' height="' + (BT + BH - top).toFixed(2) + '" fill="#bbb"/>');
        var pr = ratioY(cy.p[i] / cfg.q[y][i]);
        o.push('<line x1="' + (bx - 3) + '" x2="' + (bx + 31) + '" y1="' + pr.toFixed(2) + '" y2="' + pr.toFixed(2) +
               '" stroke="' + COLOURS[y] + '" stroke-width="3"/>');
        o.push('<text x="' + (bx + 14) + '" y="' + (BT + BH + 14) + '" font-size="11" text-anchor="middle">i=' + i +
               "</text>");
      }
      var ya = ratioY(cy.a), yb = ratioY(cy.b);
      o.push('<line data-role="level-a-' + y + '" x1="' + x0 + '" x2="' + (x0 + BW) + '" y1="' + ya.toFixed(2) +
             '" y2="' + ya.toFixed(2) + '" stroke="#1f77b4" stroke-dasharray="5,3" stroke-width="1.5"/>');
      o.push('<line data-role="level-b-' + y + '" x1="' + x0 + '" x2="' + (x0 + BW) + '" y1="' + yb.toFixed(2) +
             '" y2="' + yb.toFixed(2) + '" stroke="#ff7f0e" stroke-dasharray="5,3" stroke-width="1.5"/>');
      o.push('<text x="' + x0 + '" y="' + (BT - 8) + '" font-size="11"><tspan fill="#1f77b4">a=' +
             cy.a.toFixed(3) + '</tspan>  <tspan fill="#ff7f0e">b=' + (isFinite(cy.b) ? cy.b.toFixed(3) : "inf") +
             "</tspan></text>");
    }
    o.push('<text x="' + BX + '" y="' + (BT + BH + 32) + '" font-size="11">grey bars: f\u1D62/q\u02B8\u1D62 ' +
           '(log scale); thick marks: p\u02B8\u1D62/q\u02B8\u1D62 = clip(f\u1D62/q\u02B8\u1D62, a, b);</text>');
    o.push('<text x="' + BX + '" y="' + (BT + BH + 46) + '" font-size="11">dashed: water levels a (raise) and b ' +
           '(lower)</text>');
    return o.join("");
  }

  function table(st, unitName) {
    var rows = st.classes.map(function (c, y) {
      return "<tr><td>" + y + '</td><td data-role="P-' + y + '">' + fmt(c.P) + '</td><td data-role="p-' + y + '">' +
        c.p.map(fmt).join(", ") + '</td><td data-role="a-' + y + '">' + fmt(c.a) + '</td><td data-role="b-' + y +
        '">' + fmt(c.b) + '</td><td data-role="klf-' + y + '">' + fmt(c.klF) + '</td><td data-role="klp-' + y + '">' +
        fmt(c.klP) + '</td><td data-role="l1-' + y + '">' + fmt(c.l1) + "</td></tr>";
    }).join("");
    return '<p style="margin:0.3em 0">f(x) = (<span data-role="f">' + st.f.map(fmt).join(", ") +
      '</span>), H(f) = <span data-role="H">' + fmt(st.H) + "</span> (" + unitName + "), radius r = \u03B5 H(f) = " +
      '<span data-role="r">' + fmt(st.r) + "</span></p>" +
      '<table style="border-collapse:collapse;font-size:0.85em" border="1" cellpadding="3"><thead><tr><th>y</th>' +
      "<th>P(y) = softmax(f/T)\u1D67</th><th>p\u02B8</th><th>a</th><th>b</th><th>KL(f\u2016q\u02B8)</th>" +
      "<th>KL(p\u02B8\u2016q\u02B8)</th><th>\u2016p\u02B8 \u2212 f\u2016\u2081</th></tr></thead><tbody>" + rows +
      "</tbody></table>" +
      '<p style="margin:0.3em 0">CMI of the cloud (' + st.defended.length + ' points, nats): before the defense ' +
      '<span data-role="cmi-before">' + fmt(st.cmiBefore) + '</span>, after <span data-role="cmi-after">' +
      fmt(st.cmiAfter) + "</span></p>";
  }

  function mount(rootId, cfg) {
    var root = document.getElementById(rootId);
    if (!root) throw new Error("SSDExplorer: no element with id " + rootId);
    var state = {f: cfg.f.slice(), T: cfg.T, eps: cfg.eps, normalized: cfg.normalized};
    function slider(role, label, min, max, step, value) {
      return '<label style="display:inline-block;margin-right:1.2em">' + label + ' <input type="range" data-role="' +
        role + '" min="' + min + '" max="' + max + '" step="' + step + '" value="' + value +
        '" style="vertical-align:middle;width:140px"> <span data-role="' + role + '-value"></span></label>';
    }
    root.innerHTML =
      '<div style="font-family:sans-serif;font-size:14px">' +
      '<div data-role="controls">' +
      slider("f0", "f\u2080", 0, 1, 0.001, state.f[0]) + slider("f1", "f\u2081", 0, 1, 0.001, state.f[1]) +
      slider("eps", "\u03B5", 0, 2, 0.01, state.eps) +
      slider("logT", "T", -2, 1, 0.01, Math.log10(state.T)) +
      '<label>entropy <select data-role="unit"><option value="normalized">normalised by log 3</option>' +
      '<option value="nats">nats</option></select></label> ' +
      '<label><input type="checkbox" data-role="cloud" checked> show the cloud</label></div>' +
      '<div style="display:flex;flex-wrap:wrap;align-items:flex-start">' +
      '<svg data-role="figure" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 410 410" ' +
      'style="flex:1 1 100%;max-width:480px;touch-action:none;user-select:none;cursor:crosshair" ' +
      'font-family="sans-serif"></svg>' +
      '<svg data-role="bars" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 500 410" ' +
      'style="flex:1 1 100%;max-width:680px" font-family="sans-serif"></svg></div>' +
      '<div data-role="numbers"></div></div>';
    function el(role) { return root.querySelector('[data-role="' + role + '"]'); }
    var svg = el("figure");
    el("unit").value = state.normalized ? "normalized" : "nats";

    root.ssdConfig = cfg;  // what the figure started from, and (below) everything it shows, for tests and readers
    function render() {
      var st = compute(cfg, state);
      root.ssdState = st;
      el("f0-value").textContent = state.f[0].toFixed(3);
      el("f1-value").textContent = state.f[1].toFixed(3);
      el("eps-value").textContent = state.eps.toFixed(2);
      el("logT-value").textContent = state.T.toPrecision(3);
      svg.innerHTML = drawSimplex(cfg, st, el("cloud").checked);
      el("bars").innerHTML = drawBars(cfg, st);
      el("numbers").innerHTML = table(st, state.normalized ? "normalised by log 3" : "nats");
    }
    function setF(f0, f1) {
      f0 = Math.min(Math.max(f0, 0), 1);
      f1 = Math.min(Math.max(f1, 0), 1 - f0);
      state.f = [f0, f1, Math.max(1 - f0 - f1, 0)];
    }
    el("f0").addEventListener("input", function () {
      var f0 = parseFloat(el("f0").value), f1 = Math.min(state.f[1], 1 - f0);
      setF(f0, f1); el("f1").value = state.f[1]; render();
    });
    el("f1").addEventListener("input", function () {
      var f1 = parseFloat(el("f1").value), f0 = Math.min(state.f[0], 1 - f1);
      setF(f0, f1); el("f0").value = state.f[0]; render();
    });
    el("eps").addEventListener("input", function () { state.eps = parseFloat(el("eps").value); render(); });
    el("logT").addEventListener("input", function () {
      state.T = Math.pow(10, parseFloat(el("logT").value)); render();
    });
    el("unit").addEventListener("change", function () {
      state.normalized = el("unit").value === "normalized"; render();
    });
    el("cloud").addEventListener("change", render);

    function pointerToF(evt) {  // SVG coordinates -> barycentric, projected onto the simplex
      var m = svg.getScreenCTM();
      if (!m) return;
      var pt = svg.createSVGPoint();
      pt.x = evt.clientX; pt.y = evt.clientY;
      var loc = pt.matrixTransform(m.inverse());
      var X = (loc.x - OX) / S, Y = (OY - loc.y) / S;
      var p2 = Y / SQRT3_2, p1 = X - 0.5 * p2, p0 = 1 - p1 - p2;
      var p = [p0, p1, p2].map(function (v) { return Math.max(v, 0); }), s = sum(p);
      if (s <= 0) return;
      setF(p[0] / s, p[1] / s);
      el("f0").value = state.f[0]; el("f1").value = state.f[1];
      render();
    }
    var dragging = false;
    svg.addEventListener("pointerdown", function (evt) {
      dragging = true;
      if (svg.setPointerCapture) svg.setPointerCapture(evt.pointerId);
      pointerToF(evt);
      evt.preventDefault();
    });
    svg.addEventListener("pointermove", function (evt) { if (dragging) pointerToF(evt); });
    svg.addEventListener("pointerup", function () { dragging = false; });
    svg.addEventListener("pointercancel", function () { dragging = false; });
    render();
    return root;
  }

  return {waterfill: waterfill, entropy: entropy, kl: kl, softmax: softmax, sampleLabel: sampleLabel,
          defend: defend, cmi: cmi, cloudCmi: cloudCmi, ballPolygon: ballPolygon, compute: compute,
          mount: mount};
})();
if (typeof module !== "undefined" && module.exports) { module.exports = SSDExplorer; }
if (typeof window !== "undefined") { window.SSDExplorer = SSDExplorer; }
"""
