"""Reading and writing images, frame folders and videos; atomic file output."""
