"""One channel's way through: a dropped file from its check to its archive, and back.

Each module owns one step, and there is one path through them:

- :mod:`~flad.channel.worker`: `ChannelWorker`, the loop of one channel and the
  `--once` rules; it checks in a pool, numbers, uploads in batches, archives;
- :mod:`~flad.channel.stages`: `Stages`, check, number, upload and archive over a
  batch (a single file is a batch of one);
- :mod:`~flad.channel.store`: `ContentStore`, the one bounded store of contents
  handed from the claim to the check and from the numbering to the upload;
- :mod:`~flad.channel.retry`: the one retry policy, and `one_by_one`, the one rule
  for a batch that breaks;
- :mod:`~flad.channel.signatures` and :mod:`~flad.channel.archive`: the FS kept in
  the spool, and the move to `sent/`;
- :mod:`~flad.channel.recovery`: start-up recovery of half-done local moves;
- :mod:`~flad.channel.replies`: `ReplyPoller`, reply sets mirrored into the inbox;
- :mod:`~flad.channel.settings`: the channel's SFTP settings and signer.

May import everything below it (remote, journal, spool, outbox, the pure modules);
only `daemon` and the commands import it.
"""
