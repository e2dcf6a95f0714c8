"""``python -m viewer_bridge`` runs the command-line interface."""

from viewer_bridge.cli import main

raise SystemExit(main())
