"""``python -m aspp_seg.cli`` runs ``aspp-seg``."""

from aspp_seg.cli.main import main

if __name__ == "__main__":
    main()
