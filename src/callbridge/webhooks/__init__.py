"""Status callbacks: signing, the durable outbox and the delivery worker."""
