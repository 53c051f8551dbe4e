"""ilnp-experiment: the dissertation's mobility experiment on the lab.

alice (the mobile node) cycles 0:0:0:a-0:0:0:b-0:0:0:c by its own schedule, bob (the
correspondent) sits in 0:0:0:b, the router joins all three; both send sequence-numbered
1396-byte packets to each other. Results go to one directory:

  summary.json        per direction (alice->bob, bob->alice): sent, received, lost,
                      reordered, duplicated, latency, figures per locator; the moves
  alice_to_bob.csv    every packet bob received (trafficgen --csv), and bob_to_alice.csv
  transitions.csv     each state.locators the mobile nodes published, with wall time
  status.json         every node's actor counters at the end
  seq_vs_time.png     received sequence number vs time, moves and handoffs marked
  throughput.png      throughput in 1 s buckets coloured by the locator in use

Modules: orchestrate (lab, traffic, watchers), analysis (pure counting), plots, cli.
"""
