// /api/docs: the OpenAPI document as a readable list, grouped by tag.
import { el, mount, loading, errorBox } from './ui.js';

const box = document.getElementById('ops');

function schemaName(schema) {
  const ref = schema?.$ref ?? '';
  return ref.split('/').pop();
}

function fieldsOf(doc, schema) {
  const name = schemaName(schema);
  const resolved = name ? doc.components?.schemas?.[name] : schema;
  const props = resolved?.properties ?? {};
  const required = new Set(resolved?.required ?? []);
  return Object.entries(props).map(([key, p]) => {
    const type = p.type ?? schemaName(p) ?? (p.anyOf ? p.anyOf.map((a) => a.type ?? schemaName(a)).join(' | ') : p.enum ? 'enum' : '');
    return el('li', {}, el('code', { text: key }), ` ${type}${required.has(key) ? ' (required)' : ''}`,
      p.enum ? el('span', { class: 'muted', text: `: ${p.enum.join(', ')}` }) : null,
      p.description ? el('span', { class: 'muted', text: ` — ${p.description}` }) : null);
  });
}

async function render() {
  mount(box, loading('Loading the API description…'));
  try {
    const res = await fetch('/api/openapi.json');
    if (!res.ok) throw new Error(`The server answered ${res.status}.`);
    const doc = await res.json();
    const groups = new Map();
    for (const [path, ops] of Object.entries(doc.paths ?? {})) {
      for (const [method, op] of Object.entries(ops)) {
        const tag = op.tags?.[0] ?? 'other';
        if (!groups.has(tag)) groups.set(tag, []);
        groups.get(tag).push({ path, method, op });
      }
    }
    const nav = el('nav', { 'aria-label': 'Sections' }, el('p', {}, [...groups.keys()].flatMap((tag, i) =>
      [i ? ' · ' : '', el('a', { href: `#tag-${tag}`, text: tag })])));
    mount(box, el('p', { class: 'muted', text: `${doc.info?.title ?? 'API'} ${doc.info?.version ?? ''}. ${doc.info?.description ?? ''}` }), nav,
      [...groups.entries()].map(([tag, ops]) => el('section', { id: `tag-${tag}` }, el('h2', { text: tag }),
        ops.map(({ path, method, op }) => el('div', { class: 'op' },
          el('div', {}, el('span', { class: 'method', text: method.toUpperCase() }), el('code', { text: path }),
            op.security ? el('span', { class: 'chip', text: 'auth' }) : null),
          el('p', { text: op.summary ?? '' }),
          op.parameters?.length ? el('details', {}, el('summary', { text: 'Parameters' }), el('ul', {}, op.parameters.map((p) =>
            el('li', {}, el('code', { text: p.name }), ` in ${p.in}${p.required ? ' (required)' : ''}${p.description ? ` — ${p.description}` : ''}`)))) : null,
          op.requestBody ? el('details', {}, el('summary', { text: `Body: ${schemaName(op.requestBody.content?.['application/json']?.schema) || 'JSON'}` }),
            el('ul', {}, fieldsOf(doc, op.requestBody.content?.['application/json']?.schema))) : null,
          el('p', { class: 'muted', text: `Responses: ${Object.entries(op.responses ?? {}).map(([code, r]) => `${code} ${r.description ?? ''}`).join('; ')}` }))))));
  } catch (err) {
    mount(box, errorBox(err, render));
  }
}

render();
