// The page of `charrnn serve`: the model picker, the sampling controls (their ranges from the
// server's option table, the one the command line uses), the streamed text, and the explain panel.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = { info: null, model: null, controller: null, chars: 0 };

  function setStatus(el, text, isError) {
    el.textContent = text;
    el.classList.toggle("error", Boolean(isError));
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") return `${response.status}: ${body.error}`;
    } catch (_) { /* not JSON */ }
    return `${response.status}: ${response.statusText}`;
  }

  // -- the model picker ------------------------------------------------------------------------

  function selectModel(name) {
    state.model = name;
    for (const row of document.querySelectorAll("#models tbody tr")) {
      const picked = row.dataset.model === name;
      row.classList.toggle("selected", picked);
      row.querySelector("input").checked = picked;
    }
  }

  function buildPicker(models) {
    const body = document.querySelector("#models tbody");
    body.replaceChildren();
    for (const m of models) {
      const row = document.createElement("tr");
      row.dataset.model = m.name;
      const radio = document.createElement("input");
      radio.type = "radio";
      radio.name = "model";
      radio.value = m.name;
      radio.setAttribute("aria-label", m.name);
      const cells = [
        radio,
        m.name,
        `${m.cell} × ${m.layers} × ${m.hidden}`,
        m.val_loss === null ? "n/a" : m.val_loss.toFixed(4),
        m.trained,
      ];
      cells.forEach((content, i) => {
        const td = document.createElement("td");
        if (i === 3) td.className = "num";
        if (typeof content === "string") td.textContent = content; else td.append(content);
        row.append(td);
      });
      row.title = `${m.params.toLocaleString()} parameters, ${m.vocab_size} characters, ${m.dtype}`;
      row.addEventListener("click", () => selectModel(m.name));
      body.append(row);
    }
    if (models.length) selectModel(models[0].name);
  }

  // -- the controls ----------------------------------------------------------------------------

  function applyRange(input, opt) {
    // the range of the option table; an open end is left to the server's check
    if (input.type === "number") {
      input.min = String(opt.low);
      input.max = String(opt.high);
    }
    input.title = `${opt.help}; ${opt.range}`;
    if (opt.default !== null && opt.default !== undefined && input.type !== "checkbox") input.value = String(opt.default);
  }

  function buildControls(options, limits) {
    for (const name of ["length", "temperature", "top_k", "top_p"]) applyRange($(name), options[name]);
    $("length").max = String(Math.min(options.length.high, limits.max_chars));
    $("greedy").checked = Boolean(options.greedy.default);
    $("greedy").parentElement.title = options.greedy.help;
    $("seed").title = `${options.seed.help}; ${options.seed.range}; empty: a random seed`;
    $("prime").title = options.prime.help;
    for (const name of ["temperature", "top_p"]) {
      const show = () => { $(`${name}-value`).textContent = Number($(name).value).toFixed(2); };
      $(name).addEventListener("input", show);
      show();
    }
  }

  function requestBody() {
    const params = {
      model: state.model,
      length: Number($("length").value),
      temperature: Number($("temperature").value),
      top_k: Number($("top_k").value),
      top_p: Number($("top_p").value),
      greedy: $("greedy").checked,
    };
    const prime = $("prime").value;
    if (prime !== "") params.prime = prime;
    let text = JSON.stringify(params);
    const seed = $("seed").value.trim();
    if (seed !== "") {
      // written as it was typed: a 64-bit seed is more than a JavaScript number holds exactly
      text = text.slice(0, -1) + ',"seed":' + (/^[0-9]+$/.test(seed) ? seed : JSON.stringify(seed)) + "}";
    }
    return text;
  }

  // -- streaming -------------------------------------------------------------------------------

  function appendText(text, cls) {
    // the drawn text goes into one text node after the prime, so a long stream stays one node
    const out = $("output");
    const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
    if (cls) {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      out.append(span);
    } else if (out.lastChild && out.lastChild.nodeType === Node.TEXT_NODE) {
      out.lastChild.appendData(text);
    } else {
      out.append(document.createTextNode(text));
    }
    if (atEnd) out.scrollTop = out.scrollHeight;
  }

  // Lets the browser handle input (the stop button) and paint between two reads: a fast model
  // fills the stream faster than a page reads it, and a chain of reads that never waits would
  // keep every click waiting. The server then waits for the page (the connection's flow control).
  const breathe = () => new Promise((resolve) => setTimeout(resolve, 0));

  function running(on) {
    $("sample").disabled = on;
    $("stop").disabled = !on;
  }

  function handleEvent(name, data, started) {
    if (name === "start") {
      started.seed = data.seed;
      if (data.prime) appendText(data.prime, "prime");
      setStatus($("status"), `sampling from ${data.model} (seed ${data.seed}) …`);
    } else if (name === "text") {
      state.chars += data.length;
      appendText(data);
      setStatus($("status"), `sampling (seed ${started.seed}): ${state.chars.toLocaleString()} characters`);
    } else if (name === "done") {
      const rate = data.seconds > 0 ? `, ${Math.round(data.chars / data.seconds).toLocaleString()} characters/s` : "";
      setStatus($("status"), `done: ${data.chars.toLocaleString()} characters in ${data.seconds.toFixed(2)} s${rate} (seed ${started.seed})`);
      started.done = true;
    } else if (name === "error") {
      setStatus($("status"), data.error, true);
      started.done = true;
    }
  }

  async function sample(event) {
    event.preventDefault();
    if (!state.model || state.controller) return;
    $("output").replaceChildren();
    state.chars = 0;
    const controller = new AbortController();
    state.controller = controller;
    running(true);
    setStatus($("status"), "starting …");
    const started = { seed: null, done: false };
    try {
      const response = await fetch("/api/sample", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: requestBody(),
        signal: controller.signal,
      });
      if (!response.ok) {
        setStatus($("status"), await errorText(response), true);
        return;
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let name = "message";
          const data = [];
          for (const line of frame.split("\n")) {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
          }
          if (data.length) handleEvent(name, JSON.parse(data.join("\n")), started);
        }
        await breathe();
      }
      if (!started.done) setStatus($("status"), "the server closed the stream early", true);
    } catch (err) {
      if (err.name === "AbortError") {
        setStatus($("status"), `stopped after ${state.chars.toLocaleString()} characters (seed ${started.seed})`);
      } else {
        setStatus($("status"), `the stream failed: ${err.message}`, true);
      }
    } finally {
      state.controller = null;
      running(false);
    }
  }

  function stop() {
    if (state.controller) state.controller.abort();
  }

  // -- the explain panel -----------------------------------------------------------------------

  function loadExplainAssets(urls) {
    for (const url of urls) {
      if (url.endsWith(".css")) {
        const link = document.createElement("link");
        link.rel = "stylesheet";
        link.href = url;
        document.head.append(link);
      } else {
        const script = document.createElement("script");
        script.src = url;
        document.head.append(script);
      }
    }
  }

  async function explain() {
    const status = $("explain-status");
    if (!state.model) return;
    $("explain-go").disabled = true;
    setStatus(status, "tracing …");
    try {
      const response = await fetch("/api/trace", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: state.model, text: $("explain-text").value }),
      });
      if (!response.ok) {
        setStatus(status, await errorText(response), true);
        return;
      }
      const payload = await response.json();
      if (!window.charrnnExplain || typeof window.charrnnExplain.render !== "function") {
        setStatus(status, "the explain view's script did not load", true);
        return;
      }
      window.charrnnExplain.render($("explain-view"), payload);
      setStatus(status, `explained with ${state.model}`);
    } catch (err) {
      setStatus(status, `the trace failed: ${err.message}`, true);
    } finally {
      $("explain-go").disabled = false;
    }
  }

  // -- start -----------------------------------------------------------------------------------

  async function init() {
    $("sample-form").addEventListener("submit", sample);
    $("stop").addEventListener("click", stop);
    $("explain-go").addEventListener("click", explain);
    let info;
    try {
      const response = await fetch("/api/info");
      if (!response.ok) throw new Error(await errorText(response));
      info = await response.json();
    } catch (err) {
      setStatus($("status"), `cannot reach the server: ${err.message}`, true);
      $("sample").disabled = true;
      return;
    }
    state.info = info;
    $("version").textContent = `charrnn_ext ${info.version} · ${info.models.length} model(s) · at most ${info.limits.max_streams} streams, ${info.limits.max_chars.toLocaleString()} characters each`;
    buildPicker(info.models);
    buildControls(info.options, info.limits);
    if (info.trace) {
      loadExplainAssets(info.trace_assets);
      $("explain").hidden = false;
    }
    document.body.dataset.ready = "true";
  }

  init();
})();
