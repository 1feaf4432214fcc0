"use strict";
// A small, offline OpenAPI viewer with "try it": no CDN, no framework.
(() => {
  const METHODS = ["get", "post", "put", "patch", "delete"];
  const main = document.getElementById("operations");

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    node.append(...children);
    return node;
  }

  function resolve(spec, obj) {
    let out = obj;
    for (let i = 0; out && out.$ref && i < 10; i += 1) {
      out = out.$ref.replace(/^#\//, "").split("/").reduce((o, key) => o && o[key], spec);
    }
    return out;
  }

  function example(spec, schema, depth = 0) {
    const s = resolve(spec, schema);
    if (!s || depth > 6) return null;
    if (s.example !== undefined) return s.example;
    const alternatives = s.oneOf || s.anyOf;
    if (alternatives) return example(spec, alternatives.find((a) => a.type !== "null") || alternatives[0], depth + 1);
    if (s.type === "object" || s.properties) {
      const out = {};
      for (const [name, prop] of Object.entries(s.properties || {})) {
        if ((s.required || []).includes(name)) out[name] = example(spec, prop, depth + 1);
      }
      return out;
    }
    if (s.type === "array") return [example(spec, s.items, depth + 1)];
    return { string: "", integer: 0, number: 0, boolean: false }[s.type] ?? null;
  }

  function expand(spec, schema, depth = 0) {
    const s = resolve(spec, schema);
    if (!s || typeof s !== "object" || depth > 8) return s;
    const out = Array.isArray(s) ? [] : {};
    for (const [k, v] of Object.entries(s)) out[k] = typeof v === "object" ? expand(spec, v, depth + 1) : v;
    return out;
  }

  function bodyInput(spec, op) {
    const content = (op.requestBody && op.requestBody.content) || {};
    const types = Object.keys(content);
    if (types.includes("multipart/form-data")) {
      const schema = resolve(spec, content["multipart/form-data"].schema) || {};
      const [field, prop] = Object.entries(schema.properties || { file: {} })[0];
      const input = el("input", { type: "file", "data-field": field, accept: "image/png,image/jpeg,application/dicom,.dcm" });
      if (resolve(spec, prop).type === "array") input.multiple = true;
      return { node: el("label", { text: `${field}: ` }, input), build: () => {
        const form = new FormData();
        for (const file of input.files) form.append(field, file);
        return { body: form, headers: {} };
      } };
    }
    if (types.includes("application/json")) {
      const area = el("textarea");
      area.value = JSON.stringify(example(spec, content["application/json"].schema), null, 2);
      return { node: el("label", { text: "JSON body" }, area),
        build: () => ({ body: area.value, headers: { "Content-Type": "application/json" } }) };
    }
    return null;
  }

  async function showResponse(out, res) {
    out.replaceChildren(el("p", { text: `${res.status} ${res.statusText} · X-Request-ID ${res.headers.get("X-Request-ID")}` }));
    const type = res.headers.get("Content-Type") || "";
    if (type.startsWith("image/")) {
      out.append(el("img", { src: URL.createObjectURL(await res.blob()), alt: "response image" }));
    } else if (type.includes("json")) {
      out.append(el("pre", { text: JSON.stringify(await res.json(), null, 2) }));
    } else {
      out.append(el("pre", { text: (await res.text()).slice(0, 20000) }));
    }
  }

  function operation(spec, path, method, op) {
    const box = el("details", { class: "op", id: op.operationId || `${method}-${path}` });
    box.append(el("summary", {}, el("span", { class: `method ${method}`, text: method }), ` ${path}  `,
      el("span", { class: "muted", text: op.summary || "" })));
    if (op.description) box.append(el("p", { text: op.description }));
    const form = el("fieldset", {}, el("legend", { text: "Try it" }));
    const params = (op.parameters || []).map((p) => resolve(spec, p));
    const inputs = params.map((p) => {
      const input = el("input", { name: p.name, placeholder: p.required ? "required" : "optional" });
      form.append(el("label", { text: `${p.name} (${p.in}) ` }, input));
      return [p, input];
    });
    const body = bodyInput(spec, op);
    if (body) form.append(body.node);
    const accept = el("input", { value: "application/json", size: 24 });
    form.append(el("label", { text: "Accept " }, accept));
    const out = el("div", { class: "out" });
    const button = el("button", { type: "button", text: "Send" });
    button.addEventListener("click", async () => {
      let url = path;
      const query = new URLSearchParams();
      for (const [p, input] of inputs) {
        if (p.in === "path") url = url.replace(`{${p.name}}`, encodeURIComponent(input.value));
        else if (p.in === "query" && input.value) query.set(p.name, input.value);
      }
      if ([...query].length) url += `?${query}`;
      const built = body ? body.build() : { headers: {} };
      const headers = { ...built.headers, Accept: accept.value };
      const key = document.getElementById("api-key").value.trim();
      if (key) headers["X-API-Key"] = key;
      try {
        await showResponse(out, await fetch(url, { method: method.toUpperCase(), headers, body: built.body }));
      } catch (err) {
        out.replaceChildren(el("p", { text: `Request failed: ${err.message}` }));
      }
    });
    form.append(button, out);
    box.append(form);
    const responses = el("details", {}, el("summary", { text: "Responses" }));
    for (const [code, response] of Object.entries(op.responses || {})) {
      const r = resolve(spec, response);
      responses.append(el("p", { text: `${code}: ${r.description || ""}` }));
      for (const [type, media] of Object.entries(r.content || {})) {
        responses.append(el("pre", { text: `${type}\n${JSON.stringify(expand(spec, media.schema), null, 2)}` }));
      }
    }
    box.append(responses);
    return box;
  }

  function render(spec) {
    document.getElementById("title").textContent = `${spec.info.title} ${spec.info.version}`;
    document.getElementById("description").textContent = spec.info.description || "";
    main.replaceChildren();
    const groups = new Map();
    for (const [path, item] of Object.entries(spec.paths || {})) {
      for (const method of METHODS) {
        if (!item[method]) continue;
        const tag = (item[method].tags || [path.split("/")[1] || "api"])[0];
        if (!groups.has(tag)) groups.set(tag, []);
        groups.get(tag).push(operation(spec, path, method, item[method]));
      }
    }
    for (const [tag, ops] of groups) main.append(el("h2", { text: tag }), ...ops);
  }

  fetch("/schema/openapi.json")
    .then((res) => { if (!res.ok) throw new Error(`HTTP ${res.status}`); return res.json(); })
    .then(render)
    .catch((err) => main.replaceChildren(el("p", { text: `Could not load the schema: ${err.message}` })));
})();
