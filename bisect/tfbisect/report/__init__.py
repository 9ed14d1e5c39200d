"""Words and pictures: what reports say and how they look (terminal, HTML, Markdown, PNG, GitHub)."""
