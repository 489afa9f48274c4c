// What both consoles' pages use to put values on the page: always as text, never as markup.

/** Appends a cell holding `text` (with class `cls`) to `row`; returns it. */
export function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.append(td);
  return td;
}

/** A time in ms since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC). */
export const utc = (ms) => new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "");

/** A number with `d` decimals, or a dash for anything that is not a finite number. */
export const fixed = (v, d) => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(d) : "–");
