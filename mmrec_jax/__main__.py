from mmrec_jax.main import main

main()
