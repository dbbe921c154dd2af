"""What the annotator page shows: the conversation as chat turns and candidates as Markdown, with
any HTML in them shown as text (escaped) while code blocks and inline code stay as written; and
the keyboard shortcuts for ranking.

Shortcuts (as in annotation tools): click a candidate (or press j / k) to focus it, a digit sets
its rank and moves to the next candidate, Enter submits; none of them fire while typing in a box.
"""

from __future__ import annotations

import html
import re

# Fenced blocks (``` or ~~~, to the closing fence or the end) and inline code spans are kept.
_CODE = re.compile(r"(^(```|~~~)[^\n]*\n.*?(?:^\2[^\n]*$|\Z)|`[^`\n]+`)", re.M | re.S)


def escape_html(markdown: str) -> str:
    """Markdown whose HTML is escaped outside code, so a response can show tags but not inject them."""
    out, at = [], 0
    for m in _CODE.finditer(markdown):
        out.append(html.escape(markdown[at : m.start()], quote=False))
        out.append(m.group(0))
        at = m.end()
    out.append(html.escape(markdown[at:], quote=False))
    return "".join(out)


def chat_turns(messages: list[dict]) -> list[dict]:
    """The conversation for a `gr.Chatbot` (role/content messages), escaped."""
    return [{"role": m["role"], "content": escape_html(m["content"])} for m in messages]


SHORTCUTS_CSS = ".rl-card.rl-focused { outline: 3px solid #f97316; outline-offset: 2px; }"

SHORTCUTS_JS = """
<script>
(() => {
  // Gradio puts a group's class on two nested wrappers: keep the outer, visible ones.
  const cards = () => [...document.querySelectorAll('.rl-card')]
    .filter(c => c.offsetParent !== null && !c.parentElement.closest('.rl-card'));
  let focused = 0;
  const show = () => cards().forEach((c, i) => c.classList.toggle('rl-focused', i === focused));
  const typing = (el) => el && (el.tagName === 'TEXTAREA' ||
      (el.tagName === 'INPUT' && !['radio', 'checkbox', 'button'].includes(el.type)));
  document.addEventListener('click', (e) => {
    if (e.target.closest && e.target.closest('#submit')) { focused = 0; return; }  // the next task starts at 1
    const i = cards().findIndex(c => c.contains(e.target));
    if (i >= 0) { focused = i; show(); }
  });
  document.addEventListener('keydown', (e) => {
    if (typing(document.activeElement) || e.ctrlKey || e.metaKey || e.altKey) return;
    const list = cards();
    if (!list.length) return;
    focused = Math.min(focused, list.length - 1);
    if (e.key === 'j' || e.key === 'k') {
      focused = (focused + (e.key === 'j' ? 1 : list.length - 1)) % list.length;
    } else if (/^[1-8]$/.test(e.key)) {
      const option = [...list[focused].querySelectorAll('.rl-rank label')]
        .find(l => l.innerText.trim() === e.key);
      if (!option) return;
      option.querySelector('input').click();
      focused = Math.min(focused + 1, list.length - 1);
    } else if (e.key === 'Enter') {
      document.querySelector('#submit').click();
      focused = 0;
    } else {
      return;
    }
    e.preventDefault();
    show();
  });
})();
</script>
"""
