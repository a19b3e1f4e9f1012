"""Pure statistics behind the product's verdicts: no I/O, no settings, no clock.

Everything here can be imported and tested without a database; controllers in
`serving.delivery` call it with counts they read from the shared store.
"""
