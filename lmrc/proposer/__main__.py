from lmrc.proposer.service import main

main()
