"""`kgc review`, pure: an extraction folder read as documents with their model facts
(`corpus`), the review queue (`queue`), and the corrections file the reviewer's decisions
go to (`corrections`). The web layer is `kgc.review_app` (entry layer); the page's assets
(review.html/js/css) are package data here. docs/review.md."""
