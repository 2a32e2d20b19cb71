from lmrc.annotator.service import main

main()
