"""The report page's inline style sheet and its one script (a load hook that records how many images rendered, which
the browser test reads): the page has no external resources."""

CSS = """
:root { --fg: #1d2330; --muted: #5f6b7a; --line: #d9dee5; --soft: #f4f6f9; --best: #dff3e4; --accent: #2458a6; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.45;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 32px 64px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 40px 0 12px; padding-bottom: 6px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 24px 0 8px; }
p { margin: 6px 0; }
a { color: var(--accent); }
.muted { color: var(--muted); }
.small { font-size: 13px; }
nav { margin: 10px 0 4px; font-size: 14px; }
nav a { margin-right: 14px; }
.meta { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 16px; margin-top: 16px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; background: var(--soft); }
.card h3 { margin-top: 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; font-size: 14px; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
.note { margin-top: 14px; padding: 10px 14px; border-left: 4px solid var(--accent); background: #eef3fb;
        font-size: 14px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 14px; margin: 4px 0 8px; }
th, td { border: 1px solid var(--line); padding: 6px 10px; vertical-align: top; }
thead th { background: var(--soft); text-align: center; }
tbody th { text-align: left; font-weight: 600; }
tbody tr:nth-child(even) td, tbody tr:nth-child(even) th { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; min-width: 84px; }
td.best, tbody tr:nth-child(even) td.best { background: var(--best); font-weight: 700; }
.hint { display: block; font-weight: 400; font-size: 12px; color: var(--muted); }
figure { margin: 18px 0 26px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption { font-size: 13px; color: var(--muted); margin-top: 6px; }
.sample { border: 1px solid var(--line); border-radius: 8px; margin: 14px 0 22px; overflow: hidden; }
.sample-head { background: var(--soft); padding: 8px 14px; font-size: 13px; border-bottom: 1px solid var(--line); }
.prompt { padding: 10px 14px; border-bottom: 1px solid var(--line); }
.responses { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); }
.response { padding: 10px 14px; border-right: 1px solid var(--line); min-width: 0; }
.response:last-child { border-right: none; }
.response h4 { margin: 0 0 6px; font-size: 14px; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; font: 13px/1.45 ui-monospace, "DejaVu Sans Mono",
      monospace; max-height: 320px; overflow-y: auto; }
.role { color: var(--muted); font-weight: 700; }
.verdict { display: inline-block; margin-left: 8px; padding: 0 8px; border-radius: 10px; font-size: 12px;
           font-weight: 600; background: #e6e9ef; color: #333; }
"""

# Test hook only: lets a headless browser report whether every plot actually decoded.
SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images;
  var loaded = 0;
  for (var i = 0; i < images.length; i++) { if (images[i].naturalWidth > 0) { loaded++; } }
  document.body.dataset.imagesLoaded = String(loaded);
  document.body.dataset.imagesTotal = String(images.length);
});
"""
