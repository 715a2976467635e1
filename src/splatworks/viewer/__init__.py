"""The web viewer and upload page (static files; the npm install step provides Spark and three.js)."""
