"""Images in, training pairs out: degradations, resizing, datasets (numpy; torch only in datasets)."""
