"""The program's logic over plain dataclasses: no requests, no wire formats."""
