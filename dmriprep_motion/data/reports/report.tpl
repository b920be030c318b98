<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8" />
<meta name="viewport" content="width=device-width, initial-scale=1" />
<meta name="generator" content="dmriprep-motion, with the NiReports assembler" />
<title>{{ title }}</title>
{#- Self-contained: no CDN. The few Bootstrap class names emitted by nireports' reportlets
    (alerts, tabs, accordions) are styled here, and tabs/accordions get a small script below. #}
<style>
:root { --accent: #0b5394; --muted: #5f6b7a; --border: #d9dee5; }
* { box-sizing: border-box; }
body { margin: 0; font-family: "Helvetica Neue", Helvetica, Arial, sans-serif; font-size: 15px;
       line-height: 1.45; color: #1f2328; background: #fff; }
nav.topbar { position: sticky; top: 0; z-index: 10; background: #f4f6f9; border-bottom: 1px solid var(--border);
             padding: 0.4rem 1.5rem; display: flex; flex-wrap: wrap; gap: 0.2rem 1.2rem; align-items: baseline; }
nav.topbar .brand { font-weight: bold; color: var(--accent); margin-right: 1rem; }
nav.topbar a { color: #1f2328; text-decoration: none; }
nav.topbar a:hover { color: var(--accent); text-decoration: underline; }
nav.topbar .sub a { color: var(--muted); font-size: 0.9em; }
main { padding: 0 1.5rem 3rem 1.5rem; max-width: 1200px; }
h1.sub-report-title { font-size: 1.7rem; border-bottom: 2px solid var(--accent); padding-top: 1.2rem;
                      margin-bottom: 0.4rem; }
h2.sub-report-group { font-size: 1.35rem; margin-top: 2rem; color: var(--accent); }
h3.run-title { font-size: 1.1rem; margin: 1.6rem 0 0.3rem 0; }
p.elem-caption, p.elem-desc { color: var(--muted); margin: 0.2rem 0 0.5rem 0; max-width: 60rem; }
.reportlet { margin: 0.3rem 0; }
.reportlet img, .reportlet object { max-width: 100%; }
.reportlet object { width: 100%; }
small { color: var(--muted); }
small a { color: var(--muted); }
code { font-size: 0.92em; background: #f2f4f7; padding: 0 0.2em; border-radius: 3px; }
pre { white-space: pre-wrap; background: #f6f8fa; padding: 0.8rem; border: 1px solid var(--border);
      border-radius: 4px; font-size: 0.88em; }
table.summary-table { border-collapse: collapse; margin: 0.4rem 0 0.8rem 0; }
table.summary-table th { text-align: left; padding: 0.2rem 1.2rem 0.2rem 0; vertical-align: top;
                         white-space: nowrap; color: #33404d; }
table.summary-table td { padding: 0.2rem 0; }
table.summary-table tr { border-bottom: 1px solid #eef0f3; }
.alert { padding: 0.6rem 0.9rem; border-radius: 4px; border: 1px solid transparent; margin: 0.5rem 0; }
.alert-success { background: #e6f4ea; border-color: #b7dfc2; color: #1e5631; }
.alert-danger { background: #fdecea; border-color: #f5c2c0; color: #842029; }
.alert-warning { background: #fff4e5; border-color: #ffd8a8; color: #7a4a00; }
.alert-info { background: #e7f1fb; border-color: #b6d4f2; color: #0b3d66; }
.nav-tabs { list-style: none; display: flex; gap: 0.3rem; padding: 0; margin: 0.6rem 0 0 0;
            border-bottom: 1px solid var(--border); }
.nav-tabs .nav-link { background: none; border: 1px solid transparent; border-radius: 4px 4px 0 0;
                      padding: 0.35rem 0.9rem; cursor: pointer; font: inherit; color: var(--accent); }
.nav-tabs .nav-link.active { border-color: var(--border) var(--border) #fff; background: #fff;
                             color: #1f2328; margin-bottom: -1px; }
.tab-content > .tab-pane { display: none; }
.tab-content > .tab-pane.active { display: block; }
.accordion-item { border: 1px solid var(--border); border-radius: 4px; margin: 0.3rem 0; }
.accordion-header { margin: 0; font-size: 1rem; }
.accordion-button { width: 100%; text-align: left; background: #f6f8fa; border: 0; padding: 0.5rem 0.8rem;
                    font: inherit; font-weight: bold; cursor: pointer; }
.accordion-button::after { content: " \25BE"; }
.accordion-button.collapsed::after { content: " \25B8"; }
.collapse:not(.show) { display: none; }
.accordion-body { padding: 0.5rem 0.8rem; }
.accordion-body table { border-collapse: collapse; }
.accordion-body td, .accordion-body th { padding: 0.15rem 0.8rem 0.15rem 0; text-align: left; vertical-align: top; }
details { margin: 0.4rem 0; } summary { cursor: pointer; font-weight: bold; }
.bids-entity { font-family: monospace; background: #eef2f7; padding: 0 0.25em; border-radius: 3px; }
</style>
{% for hh in header %}
{{ hh }}
{% endfor %}
</head>
<body>
<nav class="topbar">
  <span class="brand">{{ title }}</span>
  {% for sub_report in sections %}
  <a href="#{{ sub_report.name }}">{{ sub_report.name }}</a>
  {% if sub_report.isnested %}
  <span class="sub">
    {% for run_report in sub_report.reportlets %}{% if run_report.title %}<a href="#{{ run_report.name }}">{{ run_report.title }}</a> {% endif %}{% endfor %}
  </span>
  {% endif %}
  {% endfor %}
  {% for item in navbar %}{{ item }}{% endfor %}
</nav>
<main>
{% for sub_report in sections %}
  {% if sub_report.reportlets %}
  <section id="{{ sub_report.name }}">
  <h1 class="sub-report-title">{{ sub_report.name }}</h1>
  {% for run_report in sub_report.reportlets %}
    <div id="{{ run_report.name }}" class="reportlet-group">
      {% if run_report.title %}<h2 class="sub-report-group">{{ run_report.title }}</h2>{% endif %}
      {% if run_report.subtitle %}<h3 class="run-title">{{ run_report.subtitle }}</h3>{% endif %}
      {% if run_report.description %}<p class="elem-desc">{{ run_report.description }}</p>{% endif %}
      {% for elem in run_report.components %}
        {% if elem[0] %}
          {% if elem[1] %}<p class="elem-caption">{{ elem[1] }}</p>{% endif %}
          {{ elem[0] }}
        {% endif %}
      {% endfor %}
    </div>
  {% endfor %}
  </section>
  {% endif %}
{% endfor %}
</main>
{% for ff in footer %}
{{ ff }}
{% endfor %}
<script>
// Minimal, dependency-free behaviour for the Bootstrap markup of nireports' reportlets.
document.querySelectorAll('[data-bs-toggle="tab"]').forEach(function (button) {
  button.addEventListener('click', function () {
    var list = button.closest('.nav-tabs');
    var pane = document.querySelector(button.getAttribute('data-bs-target'));
    list.querySelectorAll('.nav-link').forEach(function (b) { b.classList.remove('active'); });
    pane.parentElement.querySelectorAll('.tab-pane').forEach(function (p) { p.classList.remove('active', 'show'); });
    button.classList.add('active');
    pane.classList.add('active', 'show');
  });
});
document.querySelectorAll('[data-bs-toggle="collapse"]').forEach(function (button) {
  button.addEventListener('click', function () {
    var target = document.querySelector(button.getAttribute('data-bs-target'));
    var shown = target.classList.toggle('show');
    button.classList.toggle('collapsed', !shown);
  });
});
// Open the first item of every accordion (provenance tables).
document.querySelectorAll('.accordion').forEach(function (acc) {
  var first = acc.querySelector('.accordion-collapse');
  if (first) {
    first.classList.add('show');
    var btn = acc.querySelector('.accordion-button');
    if (btn) { btn.classList.remove('collapsed'); }
  }
});
</script>
</body>
</html>
