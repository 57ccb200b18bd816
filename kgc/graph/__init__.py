"""Knowledge graphs from extraction output: assemble, canonicalise, merge, export, show.

- `kgc.graph.build`: rows → node/edge items → merged nodes and edges (`build_in_memory`);
- `kgc.graph.stream`: the streaming job (`run_build`, `kgc graph build`);
- `kgc.graph.files`: a built graph's file names and reader (`read_graph`), which the build,
  the exports and the viewer share (files are written with `kgc.io.atomic_path`);
- `kgc.graph.export`: Neo4j CSV + Cypher, RDF Turtle (rdflib), GraphML (networkx);
- `kgc.graph.html`: the self-contained HTML viewer;
- `kgc.graph.pipeline`: documents → extraction → graph (`kgc pipeline`);
- `kgc.graph.canonical`: name normalisation and alias tables.

Importing the package is light: rdflib, networkx and Ray are imported by the functions that
use them.
"""
