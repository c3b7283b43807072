/* charrnn explain: draws a payload of schema charrnn-explain/1 (see
 * charrnn_ext/explain/payload.py) into an element. No network access, no
 * dependencies. Public API:
 *
 *   window.charrnnExplain.render(element, payload) -> {select(layer, kind, unit), showSurprisal()}
 *
 * The text is drawn once, one span per character, built here from the
 * payload's arrays; colouring a view sets one background per span.
 */
(function () {
  "use strict";

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (k === "text") e.textContent = attrs[k];
        else if (k === "className") e.className = attrs[k];
        else e.setAttribute(k, attrs[k]);
      });
    }
    (children || []).forEach(function (c) { e.appendChild(c); });
    return e;
  }

  function decodeStates(entry, n) {
    var bin = atob(entry.data);
    var bytes = new Int8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = (bin.charCodeAt(i) << 24) >> 24;
    if (bytes.length !== n * entry.units) throw new Error("charrnnExplain: states of layer " + entry.layer + " have " + bytes.length + " values, expected " + n * entry.units);
    return bytes;
  }

  // white (0 bits) to red (8 bits or more)
  function surprisalColour(bits) {
    var t = Math.max(0, Math.min(1, bits / 8));
    var g = Math.round(255 - 200 * t), b = Math.round(255 - 215 * t);
    return "rgb(255," + g + "," + b + ")";
  }

  // blue (-1) through white (0) to red (+1)
  function activationColour(v) {
    var t = Math.max(-1, Math.min(1, v)), a = Math.round(255 - 200 * Math.abs(t));
    return t >= 0 ? "rgb(255," + a + "," + a + ")" : "rgb(" + a + "," + a + ",255)";
  }

  function shown(ch) {
    if (ch === "\n") return "\u21b5";
    if (ch === " ") return "\u2423";
    if (ch === "\t") return "\u21e5";
    return ch;
  }

  function kindName(kind) { return kind === "c" ? "cell state tanh(c)" : "hidden state h"; }

  function render(root, payload) {
    if (!payload || payload.schema !== "charrnn-explain/1") throw new Error("charrnnExplain: not a charrnn-explain/1 payload");
    var chars = Array.from(payload.text);
    var vocab = Array.from(payload.vocab);
    var n = payload.surprisal.length;
    if (chars.length !== n + 1) throw new Error("charrnnExplain: " + chars.length + " characters but " + n + " positions");
    var decoded = {};
    payload.states.forEach(function (s) { decoded[s.layer + s.kind] = decodeStates(s, n); });
    root.textContent = "";
    root.classList.add("charrnn-explain");

    var m = payload.model;
    var header = el("div", {className: "cx-header"}, [
      el("h1", {text: "What the network sees"}),
      el("p", {text: m.cell + ", " + m.layers + " layer(s) of " + m.hidden + " units, " + m.dtype + ", " +
        m.n_params.toLocaleString("en") + " parameters; " + chars.length.toLocaleString("en") + " characters" +
        (payload.source ? " of " + payload.source : "") + "; " + payload.bits_per_char.toFixed(3) + " bits per character"})
    ]);

    // ---- controls
    var modeSel = el("select", {id: "cx-mode", "aria-label": "colour by"}, [
      el("option", {value: "surprisal", text: "surprisal (bits)"}),
      el("option", {value: "unit", text: "a unit's activation"})
    ]);
    var stateSel = el("select", {id: "cx-layer", "aria-label": "layer"});
    payload.states.forEach(function (s) {
      stateSel.appendChild(el("option", {value: s.layer + s.kind, text: "layer " + s.layer + ", " + kindName(s.kind)}));
    });
    var unitInput = el("input", {id: "cx-unit", type: "number", min: "0", value: "0", "aria-label": "unit"});
    var unitRange = el("input", {id: "cx-unit-range", type: "range", min: "0", value: "0", "aria-label": "unit slider"});
    var legend = el("span", {className: "cx-legend", id: "cx-legend"});
    var controls = el("div", {className: "cx-controls"}, [
      el("label", {text: "Colour by "}), modeSel,
      el("label", {text: " state "}), stateSel,
      el("label", {text: " unit "}), unitInput, unitRange, legend
    ]);
    if (!payload.states.length) { stateSel.disabled = true; unitInput.disabled = true; unitRange.disabled = true; }

    // ---- the text: one span per character, position p = index - 1 predicted it
    var textBox = el("div", {className: "cx-text", id: "cx-text"});
    var frag = document.createDocumentFragment();
    var spans = new Array(chars.length);
    for (var i = 0; i < chars.length; i++) {
      var s = document.createElement("span");
      s.textContent = chars[i] === "\n" ? "\u21b5" : chars[i];
      s.dataset.i = String(i);
      spans[i] = s;
      frag.appendChild(s);
      if (chars[i] === "\n") frag.appendChild(document.createTextNode("\n"));
    }
    textBox.appendChild(frag);

    var tip = el("div", {className: "cx-tip", id: "cx-tip", role: "tooltip"});
    tip.style.display = "none";

    function tipFor(i) {
      var rows = [];
      var title = "character " + i + ": " + JSON.stringify(chars[i]);
      if (i === 0) {
        rows.push(el("div", {text: "the first character: nothing predicted it"}));
      } else {
        var p = i - 1;
        rows.push(el("div", {className: "cx-tip-head", text: "surprisal " + payload.surprisal[p].toFixed(2) + " bits; the model expected:"}));
        var table = el("table", {className: "cx-top"});
        for (var j = 0; j < payload.top_k; j++) {
          var idx = payload.top_index[p][j];
          var tr = el("tr", {className: vocab[idx] === chars[i] ? "cx-hit" : ""}, [
            el("td", {className: "cx-char", text: shown(vocab[idx])}),
            el("td", {text: (100 * payload.top_prob[p][j]).toFixed(1) + " %"})
          ]);
          table.appendChild(tr);
        }
        rows.push(table);
      }
      if (state.mode === "unit" && i < n && current()) {
        rows.push(el("div", {text: "activation " + (current()[i * unitsOf() + state.unit] / 127).toFixed(3)}));
      }
      tip.textContent = "";
      tip.appendChild(el("div", {className: "cx-tip-title", text: title}));
      rows.forEach(function (r) { tip.appendChild(r); });
    }

    textBox.addEventListener("mouseover", function (ev) {
      var t = ev.target;
      if (!t.dataset || t.dataset.i === undefined) return;
      tipFor(Number(t.dataset.i));
      var r = t.getBoundingClientRect();
      tip.style.display = "block";
      tip.style.left = Math.max(0, Math.min(r.left, window.innerWidth - 260)) + "px";
      tip.style.top = (r.bottom + 4) + "px";
    });
    textBox.addEventListener("mouseleave", function () { tip.style.display = "none"; });

    // ---- features
    var featureBox = el("div", {className: "cx-features"}, [el("h2", {text: "Units that track features of the text"}),
      el("p", {text: "Pearson correlation of each unit with the feature over this text; click a unit to colour the text by it."})]);
    var ftable = el("table", {className: "cx-ftable", id: "cx-features"});
    ftable.appendChild(el("tr", {}, [el("th", {text: "feature"}), el("th", {text: "best units (layer/kind/unit: r)"})]));
    payload.features.forEach(function (f) {
      var cell = el("td");
      if (!f.present) cell.appendChild(el("span", {className: "cx-absent", text: "does not vary in this text"}));
      f.top.forEach(function (u) {
        var b = el("button", {type: "button", className: "cx-unit-btn", text: u.layer + "/" + u.kind + "/" + u.unit + ": " + u.r.toFixed(2)});
        b.addEventListener("click", function () { api.select(u.layer, u.kind, u.unit); });
        cell.appendChild(b);
      });
      ftable.appendChild(el("tr", {}, [el("td", {text: f.label}), cell]));
    });
    featureBox.appendChild(ftable);

    root.appendChild(header);
    root.appendChild(controls);
    root.appendChild(textBox);
    root.appendChild(featureBox);
    root.appendChild(tip);

    // ---- colouring
    var state = {mode: "surprisal", key: payload.states.length ? payload.states[0].layer + payload.states[0].kind : null, unit: 0};
    function entry() { return payload.states.filter(function (s) { return s.layer + s.kind === state.key; })[0]; }
    function current() { return state.key ? decoded[state.key] : null; }
    function unitsOf() { var e = entry(); return e ? e.units : 0; }

    function paint() {
      var i;
      if (state.mode === "surprisal") {
        spans[0].style.backgroundColor = "#eee";
        for (i = 1; i < spans.length; i++) spans[i].style.backgroundColor = surprisalColour(payload.surprisal[i - 1]);
        legend.textContent = "white: expected (0 bits) \u2013 red: surprising (8 bits or more)";
      } else {
        var data = current(), H = unitsOf(), u = state.unit;
        for (i = 0; i < n; i++) spans[i].style.backgroundColor = activationColour(data[i * H + u] / 127);
        spans[n].style.backgroundColor = "#eee";
        legend.textContent = "blue: \u22121 \u2013 white: 0 \u2013 red: +1 (after reading the character)";
      }
      root.dataset.mode = state.mode;
      root.dataset.unit = state.mode === "unit" ? state.key + "/" + state.unit : "";
    }

    function syncControls() {
      var H = unitsOf();
      unitInput.max = String(Math.max(0, H - 1));
      unitRange.max = String(Math.max(0, H - 1));
      unitInput.value = String(state.unit);
      unitRange.value = String(state.unit);
      stateSel.value = state.key || "";
      modeSel.value = state.mode;
    }

    function setUnit(v) {
      var H = unitsOf();
      v = Math.max(0, Math.min(H - 1, Math.floor(Number(v) || 0)));
      state.unit = v;
      state.mode = "unit";
      syncControls();
      paint();
    }

    modeSel.addEventListener("change", function () {
      state.mode = modeSel.value === "unit" && state.key ? "unit" : "surprisal";
      syncControls();
      paint();
    });
    stateSel.addEventListener("change", function () { state.key = stateSel.value; setUnit(state.unit); });
    unitInput.addEventListener("input", function () { setUnit(unitInput.value); });
    unitRange.addEventListener("input", function () { setUnit(unitRange.value); });

    var api = {
      select: function (layer, kind, unit) {
        if (!decoded[layer + kind]) throw new Error("charrnnExplain: no states of layer " + layer + " kind " + kind);
        state.key = layer + kind;
        setUnit(unit);
      },
      showSurprisal: function () { state.mode = "surprisal"; syncControls(); paint(); }
    };
    syncControls();
    paint();
    return api;
  }

  window.charrnnExplain = {render: render, version: 1};
})();
