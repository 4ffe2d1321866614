"""The pages people open (DESIGN.md section 2): one blueprint per page group, over `templates/`.
Pages call `workflows/` for program logic; `workflows/` never imports this package."""
